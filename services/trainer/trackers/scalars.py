"""Which numbers of each event kind a tracker plots, under which names (one naming for every tracker)."""

from __future__ import annotations

import math
from typing import Any

STEP_SCALARS = {
    "train_loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens_per_second": "train/tokens_per_second",
    "peak_memory_bytes": "train/peak_memory_bytes",
}
EVAL_SCALARS = {
    "valid_loss": "valid/loss",
    "valid_perplexity": "valid/perplexity",
    "exact_match": "valid/exact_match",
}
RESULT_SCALARS = (
    "final_train_loss",
    "final_valid_loss",
    "best_valid_loss",
    "valid_perplexity",
    "test_loss",
    "test_perplexity",
    "tokens_per_second",
    "wall_seconds",
    "train_seconds",
    "peak_memory_bytes",
    "peak_rss_bytes",
    "trainable_parameters",
    "adapter_bytes",
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scalars(kind: str, data: dict[str, Any]) -> dict[str, float]:
    """The plottable numbers of one event, by tracker name; {} for events that carry none."""
    names = {"step": STEP_SCALARS, "eval": EVAL_SCALARS}.get(kind)
    if names is None:
        return {}
    return {tag: float(data[key]) for key, tag in names.items() if _finite(data.get(key))}


def result_scalars(result: dict[str, Any]) -> dict[str, float]:
    out = {f"final/{k}": float(result[k]) for k in RESULT_SCALARS if _finite(result.get(k))}
    task = result.get("task") or {}
    if _finite(task.get("exact_match")):
        out["final/test_exact_match"] = float(task["exact_match"])
    return out


def flat_params(spec: dict[str, Any]) -> dict[str, str]:
    """A spec as tracker params: lists joined with commas, everything a string (MLflow caps values at 6000)."""
    return {k: (",".join(map(str, v)) if isinstance(v, list) else str(v))[:6000] for k, v in spec.items()}
