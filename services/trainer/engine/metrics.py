"""Metric records the engine emits: one per step, one per evaluation, one per run.

They are plain dataclasses so the CLI prints them, the trainer service turns them into events, and
`metrics.jsonl` in the run dir holds one JSON object per record (with a `kind` key).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.datasets.scoring import perplexity  # noqa: F401 - the engine's name for it


@dataclass(frozen=True)
class StepMetrics:
    step: int  # optimizer steps done, 1-based
    total_steps: int
    train_loss: float  # mean token loss over this step's micro-batches
    learning_rate: float
    tokens: int  # tokens that carried loss in this step
    tokens_per_second: float  # all tokens processed (incl. prompts) per second of step time
    step_seconds: float
    elapsed_seconds: float  # wall time since the run (or its resume) started training
    peak_memory_bytes: int  # mx.get_peak_memory() so far
    rss_bytes: int  # process resident set size
    grad_norm: float

    kind: str = "step"


@dataclass(frozen=True)
class EvalMetrics:
    step: int
    valid_loss: float
    valid_perplexity: float
    eval_seconds: float
    best_valid_loss: float
    # Exact match of greedy answers on the spec's first eval_samples valid rows; NaN when not measured.
    exact_match: float = float("nan")

    kind: str = "eval"


@dataclass(frozen=True)
class TaskScore:
    """Score of generations on the test split against the task's references."""

    task: str
    n: int
    exact_match: float
    field_accuracy: dict[str, float] = field(default_factory=dict)
    parse_rate: float = 0.0
    generation_tokens_per_second: float = 0.0
    # Each scored sample's exact match, in split order (what test_samples.jsonl holds per row).
    sample_exact: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    status: str  # succeeded | early_stopped | cancelled
    steps: int
    final_train_loss: float
    final_valid_loss: float
    best_valid_loss: float
    valid_perplexity: float
    test_loss: float
    test_perplexity: float
    task: TaskScore | None
    train_tokens: int
    tokens_per_second: float  # mean over training steps (excludes eval and checkpoint time)
    wall_seconds: float  # whole run including load, eval and test scoring
    train_seconds: float
    peak_memory_bytes: int
    peak_rss_bytes: int
    predicted_peak_memory_bytes: int
    trainable_parameters: int
    total_parameters: int
    adapter_bytes: int  # size on disk of the saved adapter (or full weights)
    run_dir: str
    backend: str  # e.g. "cpu (OpenBLAS)", "gpu (Metal)"
    test_loss_samples: int = 0  # test samples test_loss covers (capped by val_batches)
    test_loss_tokens: int = 0
    batch_size: int = 0  # the micro-batch trained with (after batch_size auto / out-of-memory halving)
    grad_accumulation: int = 0
    batch_auto: bool = False

    kind: str = "result"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunResult:
        values = dict(values)
        if values.get("task"):
            values["task"] = TaskScore(**values["task"])
        return cls(**values)


class MetricsLog:
    """Appends records to metrics.jsonl; flushed per line so a killed run keeps everything it logged."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", buffering=1)

    def write(self, record: Any) -> None:
        self._file.write(json.dumps(dataclasses.asdict(record)) + "\n")

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
