"""deploy/ checked offline: every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate),
the Compose file against the compose-spec JSON schema (vendored in deploy/schemas/), the systemd unit with
systemd-analyze, the launchd plist with plistlib, and every command they run against the real CLI parser."""

from __future__ import annotations

import json
import plistlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_VERSION = "1.33"  # native gRPC probes are GA since 1.27; 1.33 is a current supported release
SERVICE_PORTS = {"gateway": 50051, "trainer": 50052, "optimizer": 50053, "comparator": 50054}


def k8s_resources() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(
    ("name", "resource"), k8s_resources(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_kubernetes_manifest_is_valid(name, resource):
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_kubernetes_validation_catches_a_mistake():
    _, trainer = next((n, r) for n, r in k8s_resources() if r["kind"] == "StatefulSet" and "trainer" in n)
    broken = json.loads(json.dumps(trainer))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kubernetes_layout():
    """The issue's shape: Deployments + Services for the four, Redis as a StatefulSet with a PVC, trainers as
    a StatefulSet, gRPC probes on the gRPC services, and the tokens from a Secret."""
    kinds = {(r["kind"], r["metadata"]["name"]) for _, r in k8s_resources()}
    for name in ("gateway", "optimizer", "comparator", "ui"):
        assert ("Deployment", f"peftlab-{name}") in kinds and ("Service", f"peftlab-{name}") in kinds
    assert ("StatefulSet", "peftlab-redis") in kinds and ("StatefulSet", "peftlab-trainer") in kinds
    assert ("Secret", "peftlab-tokens") in kinds and ("ConfigMap", "peftlab-config") in kinds
    for _, resource in k8s_resources():
        if resource["kind"] not in ("Deployment", "StatefulSet") or "redis" in resource["metadata"]["name"]:
            continue
        (container,) = resource["spec"]["template"]["spec"]["containers"]
        service = container["args"][0]
        assert {"secretRef": {"name": "peftlab-tokens"}} in container["envFrom"]
        if service in SERVICE_PORTS:
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": SERVICE_PORTS[service]}
        if service == "trainer":
            join_args(["peftlab-service", *container["args"]])


def test_compose_file_matches_the_compose_spec():
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft7Validator)


def test_compose_services_and_health_checks():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(services) == {"redis", "optimizer", "comparator", "gateway", "trainer", "ui"}
    assert "--appendonly" in services["redis"]["command"] and services["redis"]["volumes"]
    for name, port in SERVICE_PORTS.items():
        assert services[name]["command"][0] == name
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "peftlab-service",
            "health",
            f"127.0.0.1:{port}",
        ]
    join_args(["peftlab-service", *services["trainer"]["command"]])


def test_image_entry_point_knows_every_service():
    entrypoint = (DEPLOY / "entrypoint.sh").read_text()
    subprocess.run(["sh", "-n", str(DEPLOY / "entrypoint.sh")], check=True)
    for name in (*SERVICE_PORTS, "ui", "health"):
        assert re.search(rf"(^|[\s|]){name}[\s|)]", entrypoint), name
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), f"Dockerfile copies {source}, which does not exist"


def join_args(argv: list[str]) -> object:
    """A trainer command line from deploy/ (`peftlab-service trainer ...` or `peftlab trainer join ...`),
    parsed by the real CLI parser (the entry point adds `join --redis $PEFTLAB_REDIS_URL`)."""
    if argv[0] == "peftlab-service":
        argv = ["peftlab", "trainer", "join", "--redis", "redis://redis:6379/0", *argv[2:]]
    args = build_parser().parse_args(argv[1:])
    assert args.command == "trainer" and args.trainer_command == "join"
    return args


def test_systemd_unit(tmp_path):
    unit = (DEPLOY / "systemd" / "peftlab-trainer.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    args = join_args(shlex.split(exec_start.replace("${PEFTLAB_REDIS_URL}", "redis://r:6379/0")))
    assert args.listen == "0.0.0.0:50052"
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit was parsed but not verified by systemd")
    # systemd checks that ExecStart is executable: point it at this venv's peftlab.
    peftlab = Path(shutil.which("peftlab") or Path(__import__("sys").executable).parent / "peftlab")
    copy = tmp_path / "peftlab-trainer.service"
    copy.write_text(unit.replace("/opt/peftlab/.venv/bin/peftlab", str(peftlab)))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "peftlab-trainer" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_launchd_plist():
    plist = plistlib.loads((DEPLOY / "launchd" / "org.peftlab.trainer.plist").read_bytes())
    assert plist["Label"] == "org.peftlab.trainer" and plist["RunAtLoad"] is True
    args = plist["ProgramArguments"]
    assert args[0].endswith("/.venv/bin/peftlab")
    join_args(["peftlab", *args[1:]])
    assert plist["ExitTimeOut"] >= 60  # time for running runs to checkpoint on SIGTERM


def test_container_health_check_command():
    """`peftlab-service health HOST:PORT` (the Compose health checks): 0 for a SERVING server, 1 otherwise."""
    from service_helpers import free_port, start_optimizer

    from services.common.healthcheck import main as health

    optimizer = start_optimizer()
    try:
        assert health([optimizer.address]) == 0
    finally:
        optimizer.stop()
    assert health([f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
