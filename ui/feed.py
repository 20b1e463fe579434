"""A run's event stream as the Run page accumulates it: curves, logs, progress and ETA, read incrementally
(each refresh asks only for events after the last one seen)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peftlab.v1.common_pb2 import RunEvent, RunMetrics

from ui import formatting

MAX_LOG_LINES = 500


@dataclass
class RunFeed:
    run_id: str
    last_event_id: str = ""
    steps: list[dict] = field(default_factory=list)  # one row per optimizer step
    evals: list[dict] = field(default_factory=list)  # one row per validation pass
    logs: list[str] = field(default_factory=list)
    predicted_peak_bytes: int = 0
    backend: str = ""
    result: bytes = b""  # serialized RunMetrics, once the run reports them
    phase: str = ""  # work outside the training steps in progress, e.g. "test scoring 16/50 samples"

    def add(self, events: list[RunEvent]) -> int:
        """Take in new events (older or repeated ones are skipped); returns how many were new."""
        added = 0
        for event in events:
            if self.last_event_id and _event_key(event.id) <= _event_key(self.last_event_id):
                continue
            self.last_event_id = event.id
            added += 1
            kind = event.WhichOneof("payload")
            stamp = formatting.when(event.time)[11:]
            if kind == "step":
                s = event.step
                if self.steps and s.step <= self.steps[-1]["step"]:  # a resume replays from its checkpoint
                    self.steps = [row for row in self.steps if row["step"] < s.step]
                self.steps.append(
                    {
                        "step": s.step,
                        "total_steps": s.total_steps,
                        "train_loss": s.train_loss,
                        "train_perplexity": _exp(s.train_loss),
                        "learning_rate": s.learning_rate,
                        "tokens_per_second": s.tokens_per_second,
                        "elapsed_seconds": s.elapsed_seconds,
                        "step_seconds": s.step_seconds,
                        "peak_memory_bytes": s.peak_memory_bytes,
                    }
                )
            elif kind == "eval":
                e = event.eval
                self.evals = [row for row in self.evals if row["step"] != e.step]
                self.evals.append(
                    {"step": e.step, "valid_loss": e.valid_loss, "valid_perplexity": e.valid_perplexity}
                )
            elif kind == "started":
                self.predicted_peak_bytes = event.started.predicted_peak_memory_bytes
                self.backend = event.started.backend
                resume = (
                    f", resuming from step {event.started.resume_step}" if event.started.resume_step else ""
                )
                self._log(
                    f"{stamp} started on {event.started.backend}: "
                    f"{event.started.trainable_parameters:,} of {event.started.total_parameters:,} parameters "
                    f"trained{resume}"
                )
            elif kind == "status":
                change = event.status
                why = f" ({change.reason})" if change.reason else ""
                error = f": {change.error.message}" if change.error.message else ""
                self._log(f"{stamp} status {formatting.run_status(change.status)}{why}{error}")
            elif kind == "checkpoint":
                self._log(f"{stamp} checkpoint at step {event.checkpoint.step}")
            elif kind == "log":
                self._log(f"{stamp} {event.log.message}")
            elif kind == "progress":
                p = event.progress
                label = p.phase.replace("_", " ")
                self.phase = "" if p.done >= p.total else f"{label} {p.done}/{p.total} {p.unit}"
                if p.done == 0 or p.done >= p.total:
                    self._log(f"{stamp} {label}: {p.done}/{p.total} {p.unit}")
            elif kind == "result":
                self.phase = ""
                self.result = event.result.SerializeToString()
                self._log(f"{stamp} finished: {event.result.status}, {event.result.steps} steps")
        return added

    def _log(self, line: str) -> None:
        self.logs.append(line)
        del self.logs[:-MAX_LOG_LINES]

    def metrics(self) -> RunMetrics | None:
        return RunMetrics.FromString(self.result) if self.result else None

    def curves(self) -> list[dict]:
        """Long-form rows (step, metric, value) of the loss and perplexity curves."""
        rows = [
            {
                "step": r["step"],
                "series": "train",
                "loss": r["train_loss"],
                "perplexity": r["train_perplexity"],
            }
            for r in self.steps
        ]
        rows += [
            {
                "step": r["step"],
                "series": "valid",
                "loss": r["valid_loss"],
                "perplexity": r["valid_perplexity"],
            }
            for r in self.evals
        ]
        return rows


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    fraction: float
    eta_seconds: float | None  # None before a step has been timed

    def label(self) -> str:
        eta = f" · about {formatting.duration(self.eta_seconds)} left" if self.eta_seconds is not None else ""
        return f"step {self.step} of {self.total}{eta}"


def progress(steps: list[dict], total_steps: int, window: int = 10) -> Progress:
    """Where the run is, and the time left from the mean of the last `window` step times."""
    step = steps[-1]["step"] if steps else 0
    total = max(total_steps or (steps[-1]["total_steps"] if steps else 0), 1)
    recent = [r["step_seconds"] for r in steps[-window:] if r["step_seconds"] > 0]
    # No estimate once the last step is done ("about 0s left" beside a finished run reads as a bug).
    eta = (sum(recent) / len(recent)) * (total - step) if recent and step < total else None
    return Progress(step, total, min(step / total, 1.0), eta)


def _event_key(event_id: str) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    try:
        return int(millis), int(seq or 0)
    except ValueError:
        return 0, 0


def _exp(loss: float) -> float:
    return math.exp(loss) if loss < 50 else math.inf
