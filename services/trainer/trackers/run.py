"""Train with the trackers a spec asks for: opened before training, closed with the run's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.spec import RunSpec
from services.trainer.engine.callbacks import TrainingCallback

from .callback import TrackedCallback
from .sink import RunContext, open_trackers


def train_tracked(
    spec: RunSpec,
    run_dir: Path,
    context: RunContext,
    *,
    resume: bool = False,
    callback: TrainingCallback | None = None,
    initial_eval: bool = True,
) -> Any:
    """`engine.api.train`, with every event also written to spec.report_to's trackers."""
    from services.trainer.engine.api import train

    callback = callback or TrainingCallback()
    if not spec.report_to:
        return train(spec, run_dir, resume=resume, callback=callback, initial_eval=initial_eval)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    trackers = open_trackers(spec.report_to, context)
    try:
        result = train(
            spec,
            run_dir,
            resume=resume,
            callback=TrackedCallback(callback, trackers),
            initial_eval=initial_eval,
        )
    except BaseException:
        trackers.close("failed")
        raise
    trackers.close(result.status)
    return result
