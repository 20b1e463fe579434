"""The engine callback that feeds trackers: each hook becomes the event record the trainer's event stream
carries (same kind, same fields), written to the trackers after the wrapped callback has seen it."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.trainer.engine.callbacks import TrainingCallback

from .sink import Trackers


def event_record(metrics: Any) -> dict[str, Any]:
    data = dataclasses.asdict(metrics) if dataclasses.is_dataclass(metrics) else dict(metrics)
    data.pop("kind", None)
    return data


class TrackedCallback(TrainingCallback):
    def __init__(self, inner: TrainingCallback, trackers: Trackers):
        self.inner = inner
        self.trackers = trackers

    def on_start(self, info: dict) -> None:
        self.inner.on_start(info)
        self.trackers.write("started", info)

    def on_step(self, metrics: Any) -> None:
        self.inner.on_step(metrics)
        self.trackers.write("step", event_record(metrics))

    def on_eval(self, metrics: Any) -> None:
        self.inner.on_eval(metrics)
        self.trackers.write("eval", event_record(metrics))

    def on_checkpoint(self, step: int, path: str) -> None:
        self.inner.on_checkpoint(step, path)
        self.trackers.write("checkpoint", {"step": step, "path": str(path)})

    def on_log(self, message: str) -> None:
        self.inner.on_log(message)
        self.trackers.write("log", {"message": message})

    def on_progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self.inner.on_progress(phase, done, total, unit)  # a watcher's concern, not a tracker's

    def on_end(self, result: Any) -> None:
        self.inner.on_end(result)
        self.trackers.write("result", event_record(result))

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def superseded(self) -> bool:
        return self.inner.superseded()
