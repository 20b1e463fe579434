"""Several machines on this one, as Linux network namespaces (tests/netns.py), every process real:

  svc namespace: Redis, gateway, optimizer, comparator      (10.77.1.1 towards tr-a, 10.77.2.1 towards tr-b)
  tr-a namespace: `peftlab trainer join` (10.77.1.2)         tr-b namespace: `peftlab trainer join` (10.77.2.2)
  this process: a veth link to svc on a free 10.x /24 (it submits the study and reads Redis)

A 4-trial study, 2 trials at a time, runs trials on both trainers. Mid-run tr-a's link goes down: once its
heartbeat TTL passes its run is LOST, resumes on tr-b from its last checkpoint (the runs root is a directory
both see: a shared root) and finishes. The study ends with 4 trials, 4 runs, every one SUCCEEDED once. The
timeline (link cut -> LOST -> resumed -> finished) is printed (`pytest -s`).

It needs root (network namespaces); without it the test is skipped with the reason. CI runs as root.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import grpc
import pytest
from netns import Network, privilege_problem
from peftlab.v1 import comparator_pb2, gateway_pb2_grpc, optimizer_pb2
from service_helpers import wait_for

from services.common.codec import spec_to_proto
from services.common.redis_server import server_binary, wait_ready
from services.common.redis_store import RunStore

REPO = Path(__file__).resolve().parents[1]
TTL = 3.0  # the trainers' heartbeat TTL, seconds
BEAT = 0.5  # and their heartbeat interval
SPEC = {
    "model": "tiny-llama",
    "method": "lora",
    "rank": 4,
    "batch_size": 2,
    "max_seq_length": 64,
    "warmup_steps": 0,
    "iters": 12,
    "eval_every": 12,
    "save_every": 2,
    "val_batches": 1,
    "test_samples": 0,
}
LR = optimizer_pb2.Parameter(
    name="learning_rate", float_range=optimizer_pb2.FloatRange(low=1e-4, high=1e-2, log=True)
)


@pytest.fixture
def network():
    problem = privilege_problem()
    if problem:
        pytest.skip(problem)
    net = Network()
    yield net
    net.close()


def _env(**values: str) -> dict[str, str]:
    """The services' environment: this test's settings only (no PEFTLAB_* of the caller's shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    env.update(values)
    return env


def test_a_trainer_cut_off_mid_run_loses_its_run_to_the_other_which_finishes_it(network, chat_data, tmp_path):
    svc, host_a, host_b = (network.namespace(role) for role in ("svc", "tra", "trb"))
    redis_a, addr_a, dev_a = network.link(svc, host_a, "10.77.1.0/24")
    redis_b, addr_b, _ = network.link(svc, host_b, "10.77.2.0/24")
    svc_address = network.link_host(svc)
    logs, shared = tmp_path / "logs", tmp_path / "shared-runs"
    logs.mkdir()
    common = _env(
        PEFTLAB_REDIS_URL="redis://127.0.0.1:6379/0",
        PEFTLAB_DATA_ROOT=str(chat_data.parent),
        PEFTLAB_RUNS_ROOT=str(shared),
    )

    def start(ns: str, name: str, command: list[str], **env: str):
        return network.start(ns, command, {**common, **env}, logs / f"{name}.log", REPO)

    binary, _ = server_binary()
    (tmp_path / "redis").mkdir()
    start(svc, "redis", [binary, "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
                         "--dir", str(tmp_path / "redis"), "--appendonly", "yes", "--save", ""])  # fmt: skip
    redis_url = f"redis://{svc_address}:6379/0"
    wait_ready(redis_url, timeout=30)
    py = [sys.executable, "-m"]
    start(svc, "optimizer", [*py, "services.optimizer"], PEFTLAB_OPTIMIZER_HOST="127.0.0.1")
    start(svc, "comparator", [*py, "services.comparator"], PEFTLAB_POLL_INTERVAL="0.3",
          PEFTLAB_EXPERIMENTS_ROOT=str(tmp_path / "experiments"))  # fmt: skip
    start(svc, "gateway", [*py, "services.gateway"], PEFTLAB_GATEWAY_HOST="0.0.0.0",
          PEFTLAB_PLACEMENT_INTERVAL="0.5")  # fmt: skip
    joined = {}
    for ns, name, redis_host in ((host_a, "tr-a", redis_a), (host_b, "tr-b", redis_b)):
        joined[name] = start(ns, name, [*py, "services.cli.main", "trainer", "join", "--redis", f"redis://{redis_host}:6379/0",
                         "--listen", "0.0.0.0:50052", "--id", name, "--slots", "2", "--runs-root", str(shared),
                         "--heartbeat-ttl", str(TTL)], PEFTLAB_HEARTBEAT_INTERVAL=str(BEAT))  # fmt: skip

    store = RunStore.from_url(redis_url, "peftlab:", events_maxlen=10_000)
    channel = grpc.insecure_channel(f"{svc_address}:50051")
    try:
        wait_for(lambda: {t.id for t in store.list_trainers()} == {"tr-a", "tr-b"}, 120, 0.2, "both trainers")
        trainers = {t.id: t for t in store.list_trainers()}
        assert trainers["tr-a"].address == f"{addr_a}:50052" and trainers["tr-b"].address == f"{addr_b}:50052"
        assert trainers["tr-a"].runs_root_id == trainers["tr-b"].runs_root_id  # one shared root
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = comparator_pb2.StartStudyRequest(
            name="netns",
            base=spec_to_proto({**SPEC, "data": chat_data.name}),
            space=optimizer_pb2.SearchSpace(parameters=[LR]),
            n_trials=4,
            parallelism=2,
            seed=1,
        )
        start_study = lambda: stub.StartStudy(request, timeout=30).experiment  # noqa: E731
        study = wait_for(lambda: _ready(start_study), 60, 0.5, "the gateway and comparator to serve")

        def run_on(trainer: str):
            runs = [store.get_run(i) for i in store.trainer_slot_runs(trainer)]
            return next((r for r in runs if r.status == "RUNNING" and r.progress.get("step", 0) >= 4), None)

        wait_for(lambda: run_on("tr-b"), 180, 0.2, "a trial stepping on tr-b")
        victim = wait_for(lambda: run_on("tr-a"), 180, 0.2, "a trial stepping on tr-a")
        network.cut(host_a, dev_a)
        cut_at = time.time()

        # Once tr-b trains the lost run, tr-a's copy of it must be stopped (its heartbeat failed for the TTL):
        # two processes training one run into one shared run dir would be the run trained twice.
        def trains_on_b() -> bool:
            if store.get_run(victim.id).attempt != 2:
                return False
            kinds = [(e.kind, e.data.get("status")) for e in store.read_events(victim.id, count=10_000)]
            last_start = max(i for i, k in enumerate(kinds) if k == ("status", "RUNNING"))
            return any(kind == "step" for kind, _ in kinds[last_start:])

        wait_for(trains_on_b, 120, 0.2, "the lost run stepping on tr-b")
        assert _run_processes(joined["tr-a"].pid) == [], "tr-a still trains the run tr-b resumed"

        experiment = wait_for(lambda: _ended(stub, study.id), 300, 0.5, "the study to end")
        assert experiment.status == comparator_pb2.EXPERIMENT_STATUS_SUCCEEDED, experiment.error.message

        # Nothing lost, nothing run twice: 4 trials, 4 runs, each SUCCEEDED, each started once but the one resumed.
        complete = optimizer_pb2.TrialStatus.Value("TRIAL_STATUS_COMPLETE")
        assert len(experiment.trials) == 4 and all(t.status == complete for t in experiment.trials)
        runs = [store.get_run(i) for i in experiment.run_ids]
        assert (
            sorted(r.labels["trial"] for r in runs) == ["0", "1", "2", "3"] and len({r.id for r in runs}) == 4
        )
        assert all(r.status == "SUCCEEDED" and r.metrics["steps"] == SPEC["iters"] for r in runs)
        moved = [r for r in runs if r.previous_trainer]
        assert victim.id in {r.id for r in moved}
        for r in runs:  # the lost ones resumed once, on tr-b; the others ran once
            assert (r.attempt, r.auto_resumes) == ((2, 1) if r in moved else (1, 0)), r
            assert r.previous_trainer in ("", "tr-a") and (r not in moved or r.trainer == "tr-b")

        events = store.read_events(victim.id, count=10_000)
        status = [(e.time_ms / 1000, e.data["status"]) for e in events if e.kind == "status"]
        lost_at = next(t for t, s in status if s == "LOST")
        resumed = max(i for i, e in enumerate(events) if e.kind == "status" and e.data["status"] == "RUNNING")
        resumed_at = events[resumed].time_ms / 1000
        finished_at = next(t for t, s in status if s == "SUCCEEDED")
        started = [e.data for e in events[resumed:] if e.kind == "started"]
        resume_step = int(started[0].get("resumed_from_step", 0))
        checkpoints = [e.data["step"] for e in events[:resumed] if e.kind == "checkpoint"]
        assert checkpoints and max(checkpoints) <= resume_step < SPEC["iters"]  # tr-b trained the rest itself
        after = [e.data["step"] for e in events[resumed:] if e.kind == "step"]
        assert after == list(
            range(resume_step + 1, SPEC["iters"] + 1)
        )  # from its last checkpoint, to the end
        assert TTL - BEAT - 0.2 <= lost_at - cut_at < TTL + 10  # the last beat came up to BEAT before the cut
        print(
            f"\nnetns timeline (s after the link cut): LOST {lost_at - cut_at:.1f}, resumed on tr-b "
            f"{resumed_at - cut_at:.1f} (from step {resume_step}), finished {finished_at - cut_at:.1f}; "
            f"study ended {time.time() - cut_at:.1f}"
        )
    finally:
        channel.close()
        store.close()


def _run_processes(trainer_pid: int) -> list[int]:
    """The run processes a trainer has (multiprocessing spawn children; not its resource tracker)."""
    import psutil

    try:
        children = psutil.Process(trainer_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    alive = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _ready(call):
    try:
        return call()
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise


def _ended(stub, experiment_id: str):
    request = comparator_pb2.GetExperimentRequest(experiment_id=experiment_id)
    experiment = stub.GetExperiment(request, timeout=10).experiment
    return experiment if experiment.status != comparator_pb2.EXPERIMENT_STATUS_RUNNING else None
