"""Child processes of the trainer: every run, and every Generate or Evaluate call, executes in its own
spawned process, so a crash or an out-of-memory kill inside MLX takes down that process, never the service.

A run's child writes its own events to Redis (through RedisEvents, the engine callback; buffered while Redis
is away) and sends its outcome, with any events still buffered, to the parent over a pipe; the parent turns
the outcome into the run's final status. Stopping is
cooperative first (an Event the engine polls between steps: it checkpoints and returns "cancelled"), then
SIGTERM, then SIGKILL.

A data-parallel run (spec.workers = N) is N such processes, ranks of one mx.distributed group with the
environment mlx.launch would give them (engine/distributed.py): rank 0 is the run's child as above, ranks
1..N-1 only train. When any rank dies the others are stopped too, and the run's outcome is that rank's death
(so the trainer's recovery resumes the whole run from its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    SpecError,
    error_for_code,
)
from services.common.logs import bind_run_id, setup_logging
from services.common.redis_store import RunStore
from services.common.spec import RunSpec
from services.trainer import storage
from services.trainer.run_events import PendingEvent, RedisEvents

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
# How long rank 0 may go on after another rank of its run exited with an error, before it is stopped.
RANK_GRACE_SECONDS = 30.0
CHILD_REDIS_TIMEOUT = 5.0  # seconds


# ---- in the child ------------------------------------------------------------------------------------


def _exit_with_parent() -> None:
    """A child whose trainer died (e.g. SIGKILL) exits too; its run is reaped as LOST and resumes elsewhere."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _error_record(exc: BaseException, run_dir: Path | None = None) -> dict[str, str]:
    from services.trainer.engine.errors import EngineError

    written = storage.explain(exc, run_dir) if run_dir is not None else None
    if written is not None:  # disk full, run dir not writable: the person's to fix, not worth a retry
        return {"code": written.code, "field": written.field, "message": written.message}
    if isinstance(exc, EngineError | SpecError):
        error = _from_engine_error(exc)
        return {"code": error.code, "field": error.field, "message": error.message}
    if isinstance(exc, ServiceError):
        return {"code": exc.code, "field": exc.field, "message": exc.message}
    from services.trainer.recovery import ALLOCATION_FAILURE

    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ALLOCATION_FAILURE.search(str(exc))
    ):
        # `cause` tells the trainer this is worth a retry with a smaller micro-batch (recovery.py).
        first = (str(exc).splitlines() or [""])[0][:200]
        message = f"out of memory ({first})" if first else "out of memory"
        return {"code": "RESOURCE_EXHAUSTED", "field": "", "message": message, "cause": "memory"}
    log.error("run process failed", exc_info=exc)
    # Not an error we raise on purpose: keep the type and first line for the record, the rest is in the log.
    first = (str(exc).splitlines() or [""])[0][:300]
    return {
        "code": "INTERNAL",
        "field": "",
        "message": f"{type(exc).__name__}: {first} (traceback in the trainer log)",
    }


@dataclass(frozen=True)
class RunChild:
    """Everything a run's child process needs (picklable)."""

    run_id: str
    attempt: int
    spec: RunSpec  # checked on this machine: model and data are absolute paths
    run_dir: str
    resume: bool
    redis_url: str
    redis_prefix: str
    events_maxlen: int
    log_level: str = "INFO"
    log_format: str = "text"
    memory_limit_bytes: int = 0  # address-space cap (RLIMIT_AS) on the run's process; 0 = none
    device_kind: str = (
        "cpu"  # this trainer's device: picks the data-parallel backend (NCCL on CUDA, else ring)
    )

    @property
    def workers(self) -> int:
        return self.spec.workers


def _cap_memory(limit: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class _Reply:
    """The child's one message to its parent: (kind, payload, disowned, events still buffered)."""

    def __init__(self, conn: Connection, events: RedisEvents):
        self.conn = conn
        self.events = events
        self.sent = False

    def send(self, kind: str, payload: Any) -> None:
        if not self.sent:
            self.sent = True
            self.conn.send((kind, payload, self.events.disowned, self.events.pending()))

    def on_sigterm(self, signum: int, frame: Any) -> None:
        # SIGTERM from the parent means "stop now" (the cooperative stop already had its chance, or the
        # trainer lost Redis): hand over the buffered events, then die from the signal as before. Once the
        # outcome is (being) sent the process is ending anyway: a kill mid-message would garble it.
        if self.sent:
            return
        try:
            self.send("terminated", None)
        except Exception:  # noqa: BLE001 - dying anyway
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _enter_child(child: RunChild, rank_env: dict[str, str]) -> None:
    if child.memory_limit_bytes:
        _cap_memory(child.memory_limit_bytes)
    os.environ.update(rank_env)  # before MLX reads it (mx.distributed.init)
    setup_logging("trainer-run", child.log_level, child.log_format)
    bind_run_id(child.run_id)
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _rank_main(child: RunChild, rank_env: dict[str, str]) -> None:
    """Ranks 1..N-1 of a data-parallel run: train (rank 0 reports); an error ends the process non-zero."""
    _enter_child(child, rank_env)
    from services.trainer.engine.api import train

    train(child.spec, Path(child.run_dir), resume=child.resume)


def _run_main(child: RunChild, stop: Any, conn: Connection, rank_env: dict[str, str] | None = None) -> None:
    _enter_child(child, rank_env or {})
    # A timeout, unlike the trainer's own client: a dead link must not stall training (events are buffered).
    store = RunStore.from_url(
        child.redis_url,
        child.redis_prefix,
        child.events_maxlen,
        socket_timeout=CHILD_REDIS_TIMEOUT,
        socket_connect_timeout=CHILD_REDIS_TIMEOUT,
    )
    events = RedisEvents(store, child.run_id, child.attempt, stop)
    reply = _Reply(conn, events)
    signal.signal(signal.SIGTERM, reply.on_sigterm)
    try:
        from services.trainer.trackers.run import train_tracked

        spec = child.spec
        context = _tracker_context(store, child)
        result = train_tracked(spec, Path(child.run_dir), context, resume=child.resume, callback=events)
        reply.send("result", result.to_dict())
    except BaseException as exc:  # noqa: B036 - the outcome must reach the parent whatever happened
        reply.send("error", _error_record(exc, Path(child.run_dir)))
    finally:
        conn.close()
        store.close()


def _tracker_context(store: RunStore, child: RunChild):
    """What the run's trackers need from its record: name, experiment and labels (a trial's number)."""
    from services.trainer.trackers import RunContext

    record = store.get_run(child.run_id)

    def claim_parent(experiment_id: str, candidate: str) -> str:
        # One tracker parent run per experiment, whichever trial's process creates it first.
        key = f"{store.prefix}exp:{experiment_id}:tracker_parent"
        store.r.set(key, candidate, nx=True)
        return store.r.get(key) or candidate

    return RunContext(
        run_id=child.run_id,
        run_dir=Path(child.run_dir),
        name=record.name,
        experiment_id=record.experiment_id,
        labels=dict(record.labels),
        claim_parent=claim_parent,
    )


# ---- in the parent -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a run's child ended: its result, its error, or (crashed) neither, with the exit code."""

    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    exitcode: int | None = None
    disowned: bool = False
    pending: list[PendingEvent] = field(default_factory=list)  # events the child could not write

    @property
    def crashed(self) -> bool:
        return self.result is None and self.error is None

    def crash_error(self) -> dict[str, str]:
        code = self.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGKILL:
                return {
                    "code": "RESOURCE_EXHAUSTED",
                    "field": "",
                    "message": f"run process killed ({name}), most likely out of memory; resume continues from the last checkpoint",
                }
            return {"code": "INTERNAL", "field": "", "message": f"run process died from {name}"}
        return {
            "code": "INTERNAL",
            "field": "",
            "message": f"run process exited with code {code} without a result",
        }


@dataclass
class RunJob:
    child: RunChild
    process: Any
    conn: Connection
    stop: Any
    started: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False
    shutting_down: bool = False
    lease_lost: bool = False  # stopped because this trainer's registry lease ran out (no Redis)
    oom_kills_at_start: int | None = None  # the cgroup's OOM-kill counter when the child started
    ranks: list[Any] = field(default_factory=list)  # a data-parallel run's processes of ranks 1..N-1
    workdir: str = ""  # the ranks' hostfile lives here (removed with the run's processes)

    @property
    def run_id(self) -> str:
        return self.child.run_id

    @property
    def processes(self) -> list[Any]:
        return [self.process, *self.ranks]

    def dead_rank(self) -> tuple[int, int] | None:
        """(rank, exit code) of a rank > 0 that ended without success, or None."""
        for rank, process in enumerate(self.ranks, start=1):
            if not process.is_alive() and process.exitcode not in (0, None):
                return rank, process.exitcode
        return None

    def terminate(self, grace: float = 5.0) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(grace)
            if process.is_alive():
                process.kill()
                process.join()


class RunProcesses:
    """The trainer's slots: at most `slots` run processes at once (a data-parallel run takes one per worker),
    each run watched by a thread that reports its outcome to `on_exit(job, outcome)` and then frees the slots."""

    def __init__(self, slots: int, on_exit: Callable[[RunJob, Outcome], None]):
        self.slots = slots
        self.on_exit = on_exit
        self._jobs: dict[str, RunJob] = {}
        # Slots kept for runs about to be resumed here (recovery after their child died): run id -> slots.
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def _used(self, besides: str = "") -> int:
        taken = {run_id: job.child.workers for run_id, job in self._jobs.items()}
        for run_id, n in self._held.items():
            taken.setdefault(run_id, n)
        return sum(n for run_id, n in taken.items() if run_id != besides)

    def free(self) -> int:
        with self._lock:
            return self.slots - self._used()

    def running(self) -> list[str]:
        with self._lock:
            return sorted(set(self._jobs) | set(self._held))

    def hold(self, run_id: str, slots: int = 1) -> bool:
        """Keep `slots` slots for `run_id` until it starts again (or release_hold); False when they are not free."""
        with self._lock:
            if run_id not in self._held and self._used(besides=run_id) + slots > self.slots:
                return False
            self._held[run_id] = slots
            return True

    def release_hold(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def get(self, run_id: str) -> RunJob | None:
        with self._lock:
            return self._jobs.get(run_id)

    def start(self, child: RunChild) -> RunJob:
        from services.trainer.recovery import oom_kills

        with self._lock:
            self._held.pop(child.run_id, None)  # a held slot is this run's to take
            if self._used() + child.workers > self.slots:
                busy = ", ".join(sorted(self._jobs))
                raise ResourceExhausted(
                    f"{child.workers} of the {self.slots} slot(s) of this trainer are not free (runs: {busy})"
                )
            envs, workdir = [{}], ""
            if child.workers > 1:
                from services.trainer.engine.distributed import backend_for, rank_environments

                workdir = tempfile.mkdtemp(prefix=f"peftlab-{child.run_id}-")
                envs = rank_environments(child.workers, backend_for(child.device_kind), Path(workdir))
            parent_conn, child_conn = _SPAWN.Pipe(duplex=False)
            stop = _SPAWN.Event()
            process = _SPAWN.Process(
                target=_run_main,
                args=(child, stop, child_conn, envs[0]),
                name=f"run-{child.run_id}",
                daemon=False,
            )
            process.start()
            child_conn.close()
            ranks = []
            for rank, env in enumerate(envs[1:], start=1):
                ranks.append(
                    _SPAWN.Process(
                        target=_rank_main, args=(child, env), name=f"run-{child.run_id}-{rank}", daemon=False
                    )
                )
                ranks[-1].start()
            job = RunJob(
                child=child,
                process=process,
                conn=parent_conn,
                stop=stop,
                oom_kills_at_start=oom_kills(),
                ranks=ranks,
                workdir=workdir,
            )
            self._jobs[child.run_id] = job
        threading.Thread(target=self._watch, args=(job,), name=f"watch-{child.run_id}", daemon=True).start()
        log.info(
            "run process started",
            extra={
                "run_id": child.run_id,
                "pid": process.pid,
                "resume": child.resume,
                "rank_pids": [p.pid for p in job.ranks],
            },
        )
        return job

    def _watch(self, job: RunJob) -> None:
        outcome = Outcome()
        dead_since = 0.0
        # Read while the child lives: a result larger than the pipe buffer would otherwise block its exit.
        while True:
            try:
                if job.conn.poll(0.5):
                    kind, payload, disowned, pending = job.conn.recv()
                    outcome.disowned, outcome.pending = disowned, pending
                    if kind == "result":
                        outcome.result = payload
                    elif kind == "error":
                        outcome.error = payload
                    continue
            except (EOFError, OSError):
                break
            except Exception:  # a message cut off by the child's death: it is treated as a crash
                log.exception("unreadable message from a run process", extra={"run_id": job.run_id})
                break
            if not job.process.is_alive():
                break
            dead = job.dead_rank() if outcome.result is None else None
            if dead is not None:
                # Killed: the group cannot go on. An error exit (the rank's own traceback is in the log):
                # rank 0 usually fails with "peer lost" and reports its own error; give it the time to.
                dead_since = dead_since or time.monotonic()
                if dead[1] < 0 or time.monotonic() - dead_since > RANK_GRACE_SECONDS:
                    break
        dead = job.dead_rank() if outcome.result is None else None
        # Rank 0's own death (killed itself, not by us below) is the run's; else a killed rank's.
        lead_killed = not job.process.is_alive() and (job.process.exitcode or 0) < 0
        killed = dead is not None and dead[1] < 0 and not lead_killed
        if job.process.is_alive():
            job.terminate()  # a rank is gone: the group cannot go on
        job.process.join()
        for process in job.ranks:
            process.join(30.0)
        job.terminate()
        job.conn.close()
        if job.workdir:
            shutil.rmtree(job.workdir, ignore_errors=True)
        outcome.exitcode = job.process.exitcode
        if killed:
            # The run ends as that rank did (rank 0 saw only "connection to a peer was lost"): a killed rank
            # is a killed run, which the recovery resumes from the newest checkpoint.
            rank, code = dead
            log.warning(
                "a data-parallel rank died", extra={"run_id": job.run_id, "rank": rank, "exitcode": code}
            )
            outcome.error, outcome.exitcode = None, code
        # Free the local slot before the outcome frees the Redis one: the gateway places the next run as soon
        # as Redis says the slot is free, and this trainer must then accept it.
        with self._lock:
            self._jobs.pop(job.run_id, None)
        try:
            self.on_exit(job, outcome)
        except Exception:
            log.exception("recording the run's outcome failed", extra={"run_id": job.run_id})

    def stop(self, run_id: str, grace: float, shutting_down: bool = False) -> bool:
        """Ask a run to checkpoint and stop; terminate it if it has not after `grace` seconds."""
        job = self.get(run_id)
        if job is None:
            return False
        job.cancel_requested = True
        job.shutting_down = job.shutting_down or shutting_down
        job.stop.set()

        def escalate() -> None:
            job.process.join(grace)
            if job.process.is_alive():
                log.warning(
                    "run did not stop in time; terminating", extra={"run_id": run_id, "grace_s": grace}
                )
            job.terminate()

        threading.Thread(target=escalate, name=f"stop-{run_id}", daemon=True).start()
        return True

    def terminate(self, run_id: str, lease_lost: bool = False, grace: float = 5.0) -> bool:
        """Stop a run's processes now, with no last checkpoint: SIGTERM (rank 0 hands over its buffered
        events and dies), SIGKILL after `grace` seconds. Touches no Redis; returns at once."""
        job = self.get(run_id)
        if job is None:
            return False
        job.lease_lost = job.lease_lost or lease_lost
        threading.Thread(target=job.terminate, args=(grace,), name=f"terminate-{run_id}", daemon=True).start()
        return True

    def stop_all(self, grace: float) -> None:
        """Shutdown: every run checkpoints and stops; wait for them (and their outcome records)."""
        for run_id in self.running():
            self.stop(run_id, grace, shutting_down=True)
        deadline = time.monotonic() + grace + 10.0
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)


# ---- Generate / Evaluate in a child ------------------------------------------------------------------


def _evaluate(run_dir: str, split: str, max_batches: int, task_samples: int) -> Iterator[dict[str, Any]]:
    from services.trainer.engine.api import evaluate_run

    out = evaluate_run(Path(run_dir), split=split, max_batches=max_batches, task_samples=task_samples)
    if dataclasses.is_dataclass(out.get("task")):
        out["task"] = dataclasses.asdict(out["task"])
    yield out


def _generate(
    model: str, prompt: str, adapter_dir: str | None, max_tokens: int, temperature: float
) -> Iterator[str]:
    from services.trainer.engine.api import generate_stream

    yield from generate_stream(
        model, prompt, adapter_dir=adapter_dir, max_tokens=max_tokens, temperature=temperature
    )


_CALLS: dict[str, Callable[..., Iterator[Any]]] = {"evaluate": _evaluate, "generate": _generate}


def _call_main(name: str, kwargs: dict[str, Any], conn: Connection, log_level: str, log_format: str) -> None:
    setup_logging("trainer-call", log_level, log_format)
    _exit_with_parent()
    try:
        for item in _CALLS[name](**kwargs):
            conn.send(("item", item))
        conn.send(("done", None))
    except BaseException as exc:  # noqa: B036 - report every failure to the parent
        conn.send(("error", _error_record(exc)))
    finally:
        conn.close()


def stream_from_child(
    name: str,
    kwargs: dict[str, Any],
    is_active: Callable[[], bool],
    log_level: str = "INFO",
    log_format: str = "text",
) -> Iterator[Any]:
    """Run `_CALLS[name](**kwargs)` in a spawned process and yield what it yields; the process is killed
    when the caller goes away (is_active() turns false) or stops iterating."""
    parent_conn, child_conn = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(
        target=_call_main, args=(name, kwargs, child_conn, log_level, log_format), daemon=True
    )
    process.start()
    child_conn.close()
    try:
        while True:
            if not parent_conn.poll(0.2):
                if not is_active():
                    return
                if process.is_alive() or parent_conn.poll(0):
                    continue
            try:
                kind, payload = parent_conn.recv()
            except EOFError:
                # The child is gone without saying "done": it crashed (or was killed).
                process.join()
                crash = Outcome(exitcode=process.exitcode).crash_error()
                raise error_for_code(crash["code"], crash["message"]) from None
            if kind == "item":
                yield payload
            elif kind == "done":
                return
            else:
                raise error_for_code(payload["code"], payload["message"], payload.get("field", ""))
    finally:
        parent_conn.close()
        if process.is_alive():
            process.terminate()
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join()


def _from_engine_error(exc: Exception) -> ServiceError:
    """Map an engine error (services/trainer/engine/errors.py) to its one status code.

    SpecError and DatasetError -> INVALID_ARGUMENT, ModelError and CheckpointError -> FAILED_PRECONDITION,
    OutOfMemory -> RESOURCE_EXHAUSTED. The engine is imported lazily: the parent trainer process never loads MLX.
    """
    from services.trainer.engine.errors import CheckpointError, DatasetError, ModelError, OutOfMemory

    if isinstance(exc, SpecError):
        return InvalidArgument(exc.problem, f"spec.{exc.field}")
    if isinstance(exc, DatasetError):
        return InvalidArgument(str(exc), "spec.data")
    if isinstance(exc, ModelError):
        return FailedPrecondition(str(exc), "spec.model")
    if isinstance(exc, CheckpointError):
        return FailedPrecondition(str(exc))
    if isinstance(exc, OutOfMemory):
        return ResourceExhausted(str(exc), "spec.memory_budget_gb")
    return ServiceError(str(exc))
