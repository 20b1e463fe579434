"""`make run` / `make stop` underneath: the launcher starts Redis and every service as real processes, waits
for their health checks, and stops them with SIGTERM (each shuts down gracefully)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from service_helpers import health_status, reflected_services

from services.common.redis_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launcher(action: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.launcher", action],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_start_is_idempotent_and_stop_is_graceful(tmp_path):
    ports = {name: free_port() for name in ("GATEWAY", "TRAINER", "OPTIMIZER", "COMPARATOR", "UI", "REDIS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_")}
    env.update({f"PEFTLAB_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        PEFTLAB_VAR=str(tmp_path),
        PEFTLAB_COMPARATOR_ADDRESS=f"127.0.0.1:{ports['COMPARATOR']}",
        PEFTLAB_OPTIMIZER_ADDRESS=f"127.0.0.1:{ports['OPTIMIZER']}",
    )
    try:
        first = _launcher("start", env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"127.0.0.1:{ports['GATEWAY']}" in first.stdout
        for name in ("GATEWAY", "TRAINER", "COMPARATOR"):
            assert health_status(f"127.0.0.1:{ports[name]}") == health_pb2.HealthCheckResponse.SERVING
        assert "peftlab.v1.Gateway" in reflected_services(f"127.0.0.1:{ports['GATEWAY']}")
        token = _check_the_generated_service_token(tmp_path, ports)
        pids = {p.name: p.read_text() for p in (tmp_path / "pids").glob("*.pid")}
        again = _launcher("start", env)
        assert again.returncode == 0, again.stderr
        assert {p.name: p.read_text() for p in (tmp_path / "pids").glob("*.pid")} == pids  # nothing restarted
        assert (tmp_path / "secrets" / "service-token").read_text().strip() == token  # made once
    finally:
        stopped = _launcher("stop", env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped gateway" in stopped.stdout and "stopped redis" in stopped.stdout
    assert not list((tmp_path / "pids").glob("*.pid"))
    for name in ("gateway", "trainer", "comparator"):
        assert "signal received; shutting down" in (tmp_path / "log" / f"{name}.log").read_text()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()  # AOF on


def _check_the_generated_service_token(var: Path, ports: dict[str, int]) -> str:
    """A default start is not open: var/secrets/service-token (0600) is made, the internal services refuse a
    caller without it and the gateway, which holds it, gets through to them."""
    import grpc
    from peftlab.v1 import comparator_pb2, gateway_pb2_grpc, trainer_pb2, trainer_pb2_grpc

    from services.common.interceptors import SERVICE_TOKEN_KEY

    path = var / "secrets" / "service-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert len(token) >= 32
    with grpc.insecure_channel(f"127.0.0.1:{ports['TRAINER']}") as channel:
        list_runs = trainer_pb2_grpc.TrainerStub(channel).ListRuns
        with pytest.raises(grpc.RpcError) as caught:
            list_runs(trainer_pb2.ListRunsRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        list_runs(trainer_pb2.ListRunsRequest(), timeout=10, metadata=((SERVICE_TOKEN_KEY, token),))
    with grpc.insecure_channel(f"127.0.0.1:{ports['GATEWAY']}") as channel:  # gateway -> comparator
        gateway_pb2_grpc.GatewayStub(channel).ListExperiments(
            comparator_pb2.ListExperimentsRequest(), timeout=10
        )
    for name in ("trainer", "comparator", "optimizer"):
        assert "no service token set" not in (var / "log" / f"{name}.log").read_text()
    return token
