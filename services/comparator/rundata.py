"""What the comparator reads about a run: its record and event stream in Redis (runs on the trainer pool)
or its local record and files (runs of the PyTorch backend), as the report's RunData."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from services.common.records import RunEvent, RunRecord
from services.common.redis_store import RunStore

from .report import RunData, flatten_metrics
from .state import LocalRun


def run_events(store: RunStore, run_id: str, after: str = "") -> list[RunEvent]:
    """Every event of a run's stream after `after` (the stream is capped; a run of the sizes a comparison
    uses keeps all of its events)."""
    out: list[RunEvent] = []
    while True:
        page = store.read_events(run_id, after, count=1000)
        if not page:
            return out
        out.extend(page)
        after = page[-1].id


def curves(events: list[RunEvent]) -> tuple[list[list[float]], list[list[float]]]:
    """([[step, train loss]], [[step, valid loss]]) from step and eval events; a resumed run logs a step
    again after its checkpoint: the later value wins."""
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    for event in events:
        if event.kind == "step":
            train[int(event.data["step"])] = float(event.data["train_loss"])
        elif event.kind == "eval":
            valid[int(event.data["step"])] = float(event.data["valid_loss"])
    return [[s, v] for s, v in sorted(train.items())], [[s, v] for s, v in sorted(valid.items())]


def metrics_from_events(events: list[RunEvent]) -> dict[str, float]:
    """Final metrics of a run stopped before its end (time budget), from its events: the last evaluation,
    the steps' timing and memory, and what it reported at start. No test-split metrics, no adapter size."""
    steps = [e.data for e in events if e.kind == "step"]
    evals = [e.data for e in events if e.kind == "eval"]
    started = next((e.data for e in reversed(events) if e.kind == "started"), {})
    if not evals:
        return {}
    out: dict[str, Any] = {
        "final_valid_loss": evals[-1]["valid_loss"],
        "best_valid_loss": min(e["valid_loss"] for e in evals),
        "valid_perplexity": math.exp(evals[-1]["valid_loss"]) if evals[-1]["valid_loss"] < 700 else math.inf,
    }
    if steps:
        seconds = sum(s["step_seconds"] for s in steps)
        out.update(
            steps=steps[-1]["step"],
            final_train_loss=steps[-1]["train_loss"],
            train_seconds=seconds,
            wall_seconds=steps[-1]["elapsed_seconds"],
            tokens_per_second=sum(s["tokens_per_second"] * s["step_seconds"] for s in steps) / seconds
            if seconds
            else 0.0,
            peak_memory_bytes=max(s["peak_memory_bytes"] for s in steps),
            peak_rss_bytes=max(s["rss_bytes"] for s in steps),
        )
    for name in ("trainable_parameters", "total_parameters", "predicted_peak_memory_bytes"):
        if name in started:
            out[name] = started[name]
    return flatten_metrics(out)


def sample_exact(metrics: dict[str, Any] | None) -> list[bool]:
    """The run's per-test-sample exact match (TaskScore.sample_exact), [] when it was not scored."""
    task = (metrics or {}).get("task") or {}
    return [bool(x) for x in task.get("sample_exact") or []] if isinstance(task, dict) else []


def from_run(
    store: RunStore, record: RunRecord, label: str, seed: int = 0, budget_stopped: bool = False
) -> RunData:
    events = run_events(store, record.id)
    train, valid = curves(events)
    metrics = flatten_metrics(record.metrics)
    if not metrics and record.status == "CANCELLED" and budget_stopped:
        metrics = metrics_from_events(events)
    return RunData(
        run_id=record.id,
        label=label,
        seed=seed,
        backend="mlx",
        status=record.status,
        metrics=metrics,
        error=record.error,
        train_curve=train,
        valid_curve=valid,
        budget_stopped=budget_stopped,
        params={},
        sample_exact=sample_exact(record.metrics),
    )


def from_local(run: LocalRun, label: str, seed: int = 0) -> RunData:
    """A PyTorch-backend run: its metrics.jsonl holds the same step/eval/result records as the engine's."""
    train: list[list[float]] = []
    valid: list[list[float]] = []
    path = Path(run.run_dir) / "metrics.jsonl" if run.run_dir else None
    if path is not None and path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("kind") == "step":
                train.append([record["step"], record["train_loss"]])
            elif record.get("kind") == "eval":
                valid.append([record["step"], record["valid_loss"]])
    metrics = flatten_metrics(run.metrics)
    return RunData(
        run_id=run.id,
        label=label,
        seed=seed,
        backend=run.backend,
        status=run.status,
        metrics=metrics,
        error=run.error,
        train_curve=train,
        valid_curve=valid,
        budget_stopped=bool(run.metrics and run.metrics.get("status") == "budget_stopped"),
        sample_exact=sample_exact(run.metrics),
    )
