"""A run child's events on their way to Redis: numbered per attempt, kept in a bounded buffer, in order, while
Redis cannot be reached, and flushed when it answers again, so a watcher sees every step of a run that
trained through an outage. The number makes a flush safe to repeat: Redis records each event once
(status_machine.APPEND). What is still buffered when the child ends goes to the trainer with the outcome."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from services.common.redis_store import RunStore
from services.trainer.engine.callbacks import TrainingCallback

log = logging.getLogger(__name__)

BUFFER_EVENTS = 10_000  # a step event is ~300 bytes: a few MB at most
RETRY_SECONDS = 1.0  # while Redis is away, a new event is buffered without a connection attempt this long


@dataclasses.dataclass(frozen=True)
class PendingEvent:
    seq: int
    kind: str
    data: dict[str, Any]
    progress: dict[str, Any] | None = None


class EventOutbox:
    """The ordered, bounded buffer in front of RunStore.append_event for one attempt of one run."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        attempt: int,
        capacity: int = BUFFER_EVENTS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.pending: deque[PendingEvent] = deque(maxlen=capacity)
        self.dropped = 0  # oldest events pushed out of a full buffer
        self.refused = False  # the run is no longer this attempt's: nothing more is written
        self._seq = 0
        self._down_since: float | None = None
        self._last_try = 0.0

    def put(self, kind: str, data: dict[str, Any], progress: dict[str, Any] | None = None) -> None:
        if self.refused:
            return
        self._seq += 1
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(PendingEvent(self._seq, kind, data, progress))
        if self._down_since is None or self.clock() - self._last_try >= self.retry_seconds:
            self.flush()

    def flush(self) -> bool:
        """Write what is buffered, oldest first; False while Redis is unreachable (the rest stays buffered)."""
        self._last_try = self.clock()
        flushed = 0
        while self.pending and not self.refused:
            event = self.pending[0]
            try:
                accepted = self.store.append_event(
                    self.run_id, event.kind, event.data, self.attempt, event.progress, seq=event.seq
                )
            except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not kill a run
                if self._down_since is None:
                    self._down_since = self._last_try
                    log.warning("Redis unreachable; buffering the run's events", extra={"error": str(exc)})
                return False
            if accepted is None:
                self.refused = True
                self.pending.clear()
                return True
            self.pending.popleft()
            flushed += 1
        if self._down_since is not None:
            log.warning(
                "Redis back; buffered events flushed in order",
                extra={
                    "events": flushed,
                    "dropped": self.dropped,
                    "outage_s": round(self.clock() - self._down_since, 1),
                },
            )
            self._down_since = None
        return True


class RedisEvents(TrainingCallback):
    """The engine callback of a run's child: every hook becomes an event in the run's Redis stream, with the
    run's progress fields updated in the same atomic write. If the run stops being ours (cancelled through
    the gateway while this trainer was unreachable, or reaped and resumed elsewhere), training stops."""

    def __init__(self, store: RunStore, run_id: str, attempt: int, stop: Any):
        self.outbox = EventOutbox(store, run_id, attempt)
        self.stop = stop

    @property
    def disowned(self) -> bool:
        return self.outbox.refused

    def pending(self) -> list[PendingEvent]:
        """What is still buffered (for the parent to write once Redis is back)."""
        return list(self.outbox.pending)

    def _emit(self, kind: str, data: dict[str, Any], progress: dict[str, Any] | None = None) -> None:
        self.outbox.put(kind, data, progress)
        if self.outbox.refused and not self.stop.is_set():
            log.warning("run is no longer this process's (status changed elsewhere); stopping")
            self.stop.set()

    def on_start(self, info: dict) -> None:
        self._emit("started", info)

    def on_step(self, metrics: Any) -> None:
        data = _record(metrics)
        progress = {
            k: data[k] for k in ("step", "total_steps", "train_loss", "tokens_per_second", "elapsed_seconds")
        }
        self._emit("step", data, progress)

    def on_eval(self, metrics: Any) -> None:
        data = _record(metrics)
        self._emit("eval", data, {"valid_loss": data["valid_loss"]})

    def on_checkpoint(self, step: int, path: str) -> None:
        self._emit("checkpoint", {"step": step, "path": str(path)})

    def on_log(self, message: str) -> None:
        self._emit("log", {"message": message})

    def on_progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self._emit("progress", {"phase": phase, "done": done, "total": total, "unit": unit})

    def on_end(self, result: Any) -> None:
        self.outbox.flush()  # the parent records the result with the final status, atomically

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def superseded(self) -> bool:
        return self.outbox.refused


def write_pending(store: RunStore, run_id: str, attempt: int, pending: list[PendingEvent]) -> None:
    """The parent's flush of a finished child's buffer; raises on a Redis error (the caller retries: a
    repeat is harmless, each event is recorded once)."""
    for event in pending:
        if store.append_event(run_id, event.kind, event.data, attempt, event.progress, seq=event.seq) is None:
            return  # the run moved on: this attempt writes nothing more


def _record(metrics: Any) -> dict[str, Any]:
    data = dataclasses.asdict(metrics) if dataclasses.is_dataclass(metrics) else dict(metrics)
    data.pop("kind", None)
    return data
