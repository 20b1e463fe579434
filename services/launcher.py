"""Starts and stops the whole system on one machine (`make run`, `make stop`): Redis, optimizer, comparator,
trainer, gateway and the Streamlit UI, each in the background with its log in var/log/ and its pid in
var/pids/. `start` waits until every one is healthy and prints where they listen; a second `start` only
starts what is not running. `stop` sends SIGTERM (the trainer checkpoints its runs) and waits.

    python -m services.launcher start | stop | status
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import transport
from services.common.paths import var_dir
from services.common.redis_server import server_binary, start_redis, wait_ready

STOP_TIMEOUT = 60.0  # the trainer gives running work PEFTLAB_SHUTDOWN_GRACE (30 s) to checkpoint
START_TIMEOUT = 120.0


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    command: list[str]
    marker: str  # a string of its command line, so a pid file never makes us signal someone else's process
    kind: str = "grpc"  # how to check its health: grpc | http

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def services() -> list[Service]:
    py = sys.executable
    ui_port = _port("PEFTLAB_UI_PORT", 8501)
    out = [
        Service("optimizer", _port("PEFTLAB_OPTIMIZER_PORT", 50053), [py, "-m", "services.optimizer"], "services.optimizer"),
        Service("comparator", _port("PEFTLAB_COMPARATOR_PORT", 50054), [py, "-m", "services.comparator"], "services.comparator"),
        Service("trainer", _port("PEFTLAB_TRAINER_PORT", 50052), [py, "-m", "services.trainer"], "services.trainer"),
        Service("gateway", _port("PEFTLAB_GATEWAY_PORT", 50051), [py, "-m", "services.gateway"], "services.gateway"),
        Service(
            "ui",
            ui_port,
            [
                py, "-m", "streamlit", "run", "ui/app.py", "--server.port", str(ui_port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--client.toolbarMode", "minimal",  # no "Deploy" menu: this app is served, not published
            ],
            "ui/app.py",
            kind="http",
        ),
    ]  # fmt: skip
    return out


class Paths:
    def __init__(self, root: Path):
        self.logs = root / "log"
        self.pids = root / "pids"
        self.redis = root / "redis"
        self.secrets = root / "secrets"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _running(paths: Paths, name: str, marker: str) -> int | None:
    """The pid of our still-running `name`, or None (stale pid files are removed)."""
    pid_file = paths.pid_file(name)
    try:
        pid = int(pid_file.read_text().strip())
        if (
            marker in " ".join(psutil.Process(pid).cmdline())
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    pid_file.unlink(missing_ok=True)
    return None


def _healthy(service: Service) -> bool:
    if service.kind == "http":
        try:
            with urllib.request.urlopen(f"http://{service.address}/_stcore/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False
    try:
        with transport.channel(service.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _available(service: Service) -> str:
    """Why a service cannot start here yet ("" when it can)."""
    root = Path(__file__).resolve().parents[1]
    if service.name == "optimizer" and not (root / "services" / "optimizer" / "__main__.py").exists():
        return "its server is not written yet (optimizer issue)"
    if service.name == "ui":
        try:
            import streamlit  # noqa: F401
        except ImportError:
            return "streamlit is not installed (make run installs it)"
    return ""


def service_token_file(paths: Paths) -> Path:
    """var/secrets/service-token: made once (mode 0600, in a 0700 dir), kept across starts, so a default
    install's internal services answer only each other."""
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = paths.secrets / "service-token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path


def start(paths: Paths) -> int:
    for directory in (paths.logs, paths.pids, paths.redis):
        directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not (env.get("PEFTLAB_SERVICE_TOKEN") or env.get("PEFTLAB_SERVICE_TOKEN_FILE")):
        env["PEFTLAB_SERVICE_TOKEN_FILE"] = str(service_token_file(paths))
    redis_url = env.get("PEFTLAB_REDIS_URL")
    redis_port = _port("PEFTLAB_REDIS_PORT", 6390)
    rows: list[tuple[str, str, str]] = []
    if redis_url:
        wait_ready(redis_url, timeout=10)
        rows.append(("redis", redis_url, "external (PEFTLAB_REDIS_URL)"))
    else:
        redis_url = env["PEFTLAB_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        binary, label = server_binary()
        if _running(paths, "redis", f"{redis_port}") is None:
            server = start_redis(paths.redis, port=redis_port, log_file=paths.log_file("redis"), detach=True)
            paths.pid_file("redis").write_text(f"{server.process.pid}\n")
        wait_ready(redis_url, timeout=10)
        rows.append(("redis", f"127.0.0.1:{redis_port}", f"{label}, AOF in {paths.redis}"))

    root = Path(__file__).resolve().parents[1]
    started: list[Service] = []
    for service in services():
        missing = _available(service)
        if missing:
            rows.append((service.name, "-", f"skipped: {missing}"))
            continue
        if _running(paths, service.name, service.marker) is None:
            with open(paths.log_file(service.name), "ab") as log:
                process = subprocess.Popen(
                    service.command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            paths.pid_file(service.name).write_text(f"{process.pid}\n")
        started.append(service)

    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(started)
    while waiting:
        for service in list(waiting):
            if _healthy(service):
                waiting.remove(service)
            elif _running(paths, service.name, service.marker) is None:
                print(
                    f"{service.name} exited; last lines of {paths.log_file(service.name)}:", file=sys.stderr
                )
                print(_tail(paths.log_file(service.name)), file=sys.stderr)
                return 1
        if waiting and time.monotonic() > deadline:
            names = ", ".join(s.name for s in waiting)
            print(f"not healthy after {START_TIMEOUT:.0f}s: {names}; see {paths.logs}/", file=sys.stderr)
            return 1
        time.sleep(0.3)

    for service in started:
        where = f"http://{service.address}" if service.kind == "http" else service.address
        rows.append((service.name, where, f"log {paths.log_file(service.name)}"))
    width = max(len(r[0]) for r in rows)
    address_width = max(len(r[1]) for r in rows)
    print("peftlab is running:")
    for name, where, note in rows:
        print(f"  {name:<{width}}  {where:<{address_width}}  {note}")
    print("try:  .venv/bin/peftlab status    ·    make stop  to stop everything")
    return 0


def stop(paths: Paths) -> int:
    redis_port = _port("PEFTLAB_REDIS_PORT", 6390)
    order = [(s.name, s.marker) for s in reversed(services())] + [("redis", f"{redis_port}")]
    pids = {}
    for name, marker in order:
        pid = _running(paths, name, marker)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        pids[name] = pid
        if name in ("gateway", "trainer"):
            # The gateway first (no new placements), then the trainer checkpoints: one at a time.
            _wait_gone(name, pid)
    for name, pid in pids.items():
        _wait_gone(name, pid)
        paths.pid_file(name).unlink(missing_ok=True)
        print(f"stopped {name}")
    if not pids:
        print("nothing was running")
    return 0


def _wait_gone(name: str, pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.wait(STOP_TIMEOUT)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        print(f"{name} did not stop in {STOP_TIMEOUT:.0f}s; killing it", file=sys.stderr)
        os.killpg(pid, signal.SIGKILL)


def status(paths: Paths) -> int:
    redis_port = _port("PEFTLAB_REDIS_PORT", 6390)
    code = 0
    for name, marker, service in [("redis", f"{redis_port}", None)] + [
        (s.name, s.marker, s) for s in services()
    ]:
        pid = _running(paths, name, marker)
        healthy = service is None or (pid is not None and _healthy(service))
        state = "not running" if pid is None else ("healthy" if healthy else "starting or unhealthy")
        code = code or (pid is None or not healthy)
        print(f"{name:<10} {state}" + (f" (pid {pid})" if pid else ""))
    return int(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.launcher", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    paths = Paths(var_dir())
    return {"start": start, "stop": stop, "status": status}[args.action](paths)


if __name__ == "__main__":
    sys.exit(main())
