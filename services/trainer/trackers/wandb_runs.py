"""Weights & Biases: offline by default (files under `<run_dir>/wandb/`, `wandb sync` uploads them later);
online when WANDB_MODE=online or WANDB_API_KEY is set. A trial is grouped under its experiment's id."""

from __future__ import annotations

import os
from typing import Any

import wandb

from .scalars import result_scalars, scalars
from .sink import RunContext

_EXIT = {"succeeded": 0, "early_stopped": 0, "cancelled": 1, "failed": 1}


class WandbTracker:
    def __init__(self, context: RunContext):
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "peftlab"),
            dir=str(context.run_dir),
            id=context.run_id,
            name=context.name or context.run_id,
            group=context.experiment_id or None,
            tags=[f"{k}={v}" for k, v in context.labels.items()],
            mode=mode,
            resume="allow",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def write(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            self.run.config.update(data.get("spec") or {}, allow_val_change=True)
        elif kind in ("step", "eval"):
            values = scalars(kind, data)
            if values:
                self.run.log(values, step=int(data["step"]))
        elif kind == "result":
            self.run.summary.update(result_scalars(data))

    def close(self, status: str) -> None:
        self.run.finish(exit_code=_EXIT.get(status, 0))


def open_tracker(context: RunContext) -> WandbTracker:
    return WandbTracker(context)
