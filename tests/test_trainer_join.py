"""`peftlab trainer join`: a real trainer process joining a real Redis, as on another machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from service_helpers import health_status, wait_for

from services.common.redis_store import redacted
from services.trainer.address import advertised_host, is_loopback
from services.trainer.config import TrainerConfig


def join(redis_url: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "services.cli.main", "trainer", "join", "--redis", redis_url, *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def test_join_advertises_a_reachable_address_reports_hardware_and_leaves_on_sigterm(
    redis_url, redis_prefix, store, tmp_path
):
    proc = join(
        redis_url,
        "--listen", "0.0.0.0:0",
        "--id", "joined-1",
        "--slots", "2",
        "--runs-root", str(tmp_path / "runs"),
        env={"PEFTLAB_REDIS_PREFIX": redis_prefix},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "trainer joined-1 joined redis://127.0.0.1" in line, line + proc.stderr.read()
        (record,) = wait_for(lambda: store.list_trainers(), what="the registry entry")
        host = record.address.rpartition(":")[0]
        assert not is_loopback(host) and host != "0.0.0.0", record.address
        assert record.slots == 2 and record.runs_root == str((tmp_path / "runs").resolve())
        assert record.hardware["device_kind"] == "cpu" and record.hardware["total_memory_bytes"] > 0
        assert record.address in line
        assert health_status(record.address) == 1  # SERVING, through the advertised address
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert store.list_trainers() == []
    finally:
        proc.kill()


def test_join_refuses_bad_input_with_a_sentence(redis_url):
    bad = join(redis_url, "--listen", "0.0.0.0")
    assert bad.wait(timeout=60) == 2 and "--listen: want HOST:PORT" in bad.stderr.read()
    nowhere = join("redis://:secret@127.0.0.1:1/0", "--listen", "127.0.0.1:0")
    assert nowhere.wait(timeout=60) == 2
    message = nowhere.stderr.read()
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in message and "secret" not in message


def test_advertised_address_rules():
    assert advertised_host("10.1.2.3", "redis://127.0.0.1:6379") == "10.1.2.3"
    assert not is_loopback(advertised_host("0.0.0.0", "redis://127.0.0.1:6379"))
    explicit = TrainerConfig(host="0.0.0.0", advertise="trainer.example:7000")
    assert explicit.advertised(50052) == "trainer.example:7000"
    assert TrainerConfig(host="127.0.0.1").advertised(50052) == "127.0.0.1:50052"
    assert redacted("redis://user:pw@h:6380/2") == "redis://user:***@h:6380/2"
