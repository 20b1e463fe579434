"""The two runs-root modes of trainers that `peftlab trainer join` starts (README, "Several machines").

- Shared root: the trainers see one runs root, hence one id; a run lost with its trainer resumes on another
  from its checkpoint: `test_services_e2e.py::test_two_trainers_in_parallel_queue_and_resume_after_a_trainer_leaves`
  (a trainer that shuts down) and `test_multihost_netns.py` (a trainer whose link is cut) test that.
- Per-machine roots, here at the same path (the case a path comparison took for shared): a joined trainer
  takes a run submitted through the gateway and leaves mid-run; the trainer that joins on another disk at
  that path does not take the run; the gateway, the CLI (`run get`, `run watch`) and the UI's Run page say
  it waits for its trainer; that trainer joins again and the run resumes there from its checkpoint and
  succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway, wait_for
from streamlit.testing.v1 import AppTest

from services.cli.main import main as cli
from services.common.codec import spec_to_proto
from services.common.runs_root import ID_FILE

SPEC = {
    "model": "tiny-llama",
    "method": "lora",
    "rank": 4,
    "batch_size": 2,
    "max_seq_length": 64,
    "warmup_steps": 0,
    "eval_every": 0,
    "val_batches": 1,
    "test_samples": 0,
    "iters": 40,
    "save_every": 2,
}
APP = os.path.join(os.path.dirname(__file__), "..", "ui", "app.py")


def join(redis_url, prefix, trainer_id, runs_root, data_root) -> subprocess.Popen:
    command = [sys.executable, "-m", "services.cli.main", "trainer", "join", "--redis", redis_url]
    command += [
        "--listen",
        "0.0.0.0:0",
        "--id",
        trainer_id,
        "--runs-root",
        str(runs_root),
        "--heartbeat-ttl",
        "3",
    ]
    env = {
        **os.environ,
        "PEFTLAB_REDIS_PREFIX": prefix,
        "PEFTLAB_DATA_ROOT": str(data_root),
        "PEFTLAB_HEARTBEAT_INTERVAL": "0.5",
    }
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def leave(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("keep_main_module")
def test_per_machine_roots_at_one_path_wait_for_their_trainer(
    redis_url, redis_prefix, store, chat_data, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "runs"  # tr-a's disk now, tr-b's later: the same path on two machines
    joined = [join(redis_url, redis_prefix, "tr-a", root, chat_data.parent)]
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, root)
    try:
        wait_for(lambda: store.trainer_alive("tr-a"), 120, 0.2, "tr-a to join")
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)
        spec = spec_to_proto({**SPEC, "data": chat_data.name})
        run = stub.SubmitRun(gateway_pb2.SubmitRunRequest(spec=spec), timeout=30).run
        assert run.trainer_id == "tr-a"  # the joined trainer takes runs from the gateway
        wait_for(lambda: store.get_run(run.id).progress.get("step", 0) >= 4, 120, 0.2, "a few steps")
        a_id = store.get_trainer("tr-a").runs_root_id
        assert a_id == (root / ID_FILE).read_text().strip() == store.get_run(run.id).runs_root_id

        leave(joined[0])  # SIGTERM: it checkpoints, the run is LOST and queued to resume
        wait_for(lambda: store.status_of(run.id) == "RESUMING", 30, 0.2, "the run queued to resume")
        stopped_at = int(store.get_run(run.id).progress["step"])
        assert stopped_at < SPEC["iters"]

        # Another machine's disk at the same path: a different id, so tr-b must not take the run.
        os.rename(root, tmp_path / "tr-a-disk")
        joined.append(join(redis_url, redis_prefix, "tr-b", root, chat_data.parent))
        wait_for(lambda: store.trainer_alive("tr-b"), 120, 0.2, "tr-b to join")
        assert store.get_trainer("tr-b").runs_root_id not in ("", a_id)
        gateway.core.placer.tick()  # a placement pass that sees tr-b free
        record = store.get_run(run.id)
        assert record.status == "RESUMING" and record.trainer == "" and not (root / run.id).exists()
        waiting = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.id), timeout=10).run.waiting
        assert waiting.startswith("waiting for trainer tr-a (its runs root is not shared)"), waiting

        assert cli(["--gateway", gateway.address, "run", "get", run.id]) == 0
        assert json.loads(capsys.readouterr().out)["waiting"] == waiting
        monkeypatch.setenv("PEFTLAB_GATEWAY", gateway.address)
        from ui import client, state

        client.refresh()
        page = AppTest.from_file(APP, default_timeout=60)
        page.session_state[state.RUN_ID] = run.id
        page.run()
        page.switch_page(state.PAGE_RUN).run()
        assert waiting in [w.value for w in page.warning], [w.value for w in page.warning]

        # `run watch` says so too, then follows the run once tr-a is back on its own disk.
        watched: list[int] = []
        watcher = threading.Thread(
            target=lambda: watched.append(cli(["--gateway", gateway.address, "run", "watch", run.id]))
        )
        watcher.start()
        joined.append(join(redis_url, redis_prefix, "tr-a", tmp_path / "tr-a-disk", chat_data.parent))
        watcher.join(timeout=180)
        assert watched == [0]
        out = capsys.readouterr().out
        assert f"RESUMING: {waiting}" in out and "SUCCEEDED" in out, out
        record = store.get_run(run.id)
        assert record.status == "SUCCEEDED" and record.trainer == "tr-a" and record.attempt == 2
        assert record.run_dir == str(tmp_path / "tr-a-disk" / run.id)
        events = store.read_events(run.id, count=10_000)
        resumed_at = max(
            i for i, e in enumerate(events) if e.kind == "status" and e.data["status"] == "RUNNING"
        )
        steps = [e.data["step"] for e in events[resumed_at:] if e.kind == "step"]
        assert steps == list(range(stopped_at + 1, SPEC["iters"] + 1))  # from its checkpoint, to the end
    finally:
        gateway.stop()
        for proc in joined:
            leave(proc)
