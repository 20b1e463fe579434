"""Hooks a caller plugs into a run (mlx_lm's TrainingCallback idea): the CLI draws a progress bar with
them, the trainer service turns them into Redis events. Every hook is a no-op by default."""

from __future__ import annotations

from .metrics import EvalMetrics, RunResult, StepMetrics


class TrainingCallback:
    def on_start(self, info: dict) -> None:
        """Once, after the model is loaded: spec, parameter counts, predicted memory, backend, resume step."""

    def on_step(self, metrics: StepMetrics) -> None:
        pass

    def on_eval(self, metrics: EvalMetrics) -> None:
        pass

    def on_checkpoint(self, step: int, path: str) -> None:
        pass

    def on_log(self, message: str) -> None:
        pass

    def on_progress(self, phase: str, done: int, total: int, unit: str) -> None:
        """During work outside the training steps ("valid", "test_loss", "test_scoring",
        "baseline_scoring"): `done` of `total` units ("batches" or "samples") finished."""

    def on_end(self, result: RunResult) -> None:
        pass

    def should_stop(self) -> bool:
        """Polled between steps; True ends the run cleanly with a checkpoint (status 'cancelled')."""
        return False

    def superseded(self) -> bool:
        """True once another attempt owns the run: the loop then stops without a checkpoint (a cancelled run
        still writes one; a superseded one must not, the new attempt may be reading or writing them)."""
        return False
