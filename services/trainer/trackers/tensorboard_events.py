"""TensorBoard: event files under `<run_dir>/tensorboard/`, written by tensorboardX's SummaryWriter."""

from __future__ import annotations

import json
from typing import Any

from tensorboardX import SummaryWriter

from .scalars import result_scalars, scalars
from .sink import RunContext

LOG_DIR = "tensorboard"


class TensorBoardTracker:
    def __init__(self, context: RunContext):
        # One writer per attempt: a resume appends a new event file beside the old one (TensorBoard merges them).
        self.writer = SummaryWriter(logdir=str(context.run_dir / LOG_DIR), flush_secs=10)
        self.last_step = 0

    def write(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            spec = data.get("spec") or {}
            self.writer.add_text("spec", "```\n" + json.dumps(spec, indent=2, sort_keys=True) + "\n```", 0)
            return
        if kind == "log":
            self.writer.add_text("log", str(data.get("message", "")), self.last_step)
            return
        if kind == "result":
            for tag, value in result_scalars(data).items():
                self.writer.add_scalar(tag, value, int(data.get("steps", self.last_step)))
            return
        step = int(data.get("step", self.last_step))
        self.last_step = max(self.last_step, step)
        for tag, value in scalars(kind, data).items():
            self.writer.add_scalar(tag, value, step)

    def close(self, status: str) -> None:
        self.writer.close()


def open_tracker(context: RunContext) -> TensorBoardTracker:
    return TensorBoardTracker(context)
