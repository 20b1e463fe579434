"""How a task is scored: a dataset's task (its dataset.json) picks the scorer of greedy answers against the
references; exact match unless the task has its own. Shared by the engine's evaluation and the comparator's
PyTorch backend, so both score alike."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


def task_name(data_dir: Path) -> str:
    meta = Path(data_dir) / "dataset.json"
    if meta.exists():
        try:
            info = json.loads(meta.read_text())
            return str(info.get("task") or info.get("name"))
        except (ValueError, AttributeError):
            pass  # an unreadable description only costs the task-specific scorer
    return "exact_match"


def _exact_match(predictions: list[str], references: list[str]) -> dict[str, Any]:
    hits = sum(" ".join(p.split()) == " ".join(r.split()) for p, r in zip(predictions, references))
    return {"exact_match": hits / max(1, len(references)), "field_accuracy": {}, "parse_rate": 1.0}


def scorer(task: str) -> Callable[[list[str], list[str]], dict[str, Any]]:
    if task == "extraction":
        from .extraction_score import score

        def extraction(predictions: list[str], references: list[str]) -> dict[str, Any]:
            result = score(predictions, references)
            return {
                "exact_match": result.exact_match,
                "field_accuracy": dict(result.field_accuracy),
                "parse_rate": result.parse_rate,
            }

        return extraction
    return _exact_match


def perplexity(loss: float) -> float:
    # exp overflows past ~709; a diverged run reports inf rather than crashing the report.
    return math.exp(loss) if loss < 700 else math.inf
