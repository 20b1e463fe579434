"""Checkpoints that make a resume continue the same loss curve: trainable weights, optimizer state, RNG state,
data position and counters. Written atomically (a temp dir renamed into place, then a `latest` pointer
replaced), so a run killed at any instant leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from services.common.files import fsync_dir, replacing_dir, write_atomic

from .errors import CheckpointError

KEEP = 2  # checkpoints kept per run; full fine-tuning checkpoints are the size of the model


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_index: int = 0  # next micro-batch within the epoch
    tokens: int = 0
    loss_tokens: int = 0
    train_seconds: float = 0.0
    best_valid_loss: float = float("inf")
    evals_without_improvement: int = 0
    last_valid_loss: float = float("nan")


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save(run_dir: Path, model: nn.Module, optimizer: optim.Optimizer, progress: Progress, spec: dict) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{progress.step:07d}"
    final = root / name
    with replacing_dir(final) as tmp:
        mx.save_safetensors(
            str(tmp / "weights.safetensors"), dict(tree_flatten(model.trainable_parameters()))
        )
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        rng = [int(x) for x in mx.random.state[0].tolist()]
        state = {"progress": asdict(progress), "rng": rng, "spec": spec}
        (tmp / "state.json").write_text(json.dumps(state))
    write_atomic(root / "latest", name)
    fsync_dir(root)
    older = sorted(p for p in root.glob("step_*") if p.name != name)
    for old in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    root = checkpoints_dir(run_dir)
    pointer = root / "latest"
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / "state.json").exists():
            return path
    complete = sorted(p for p in root.glob("step_*") if (p / "state.json").exists())
    return complete[-1] if complete else None


def saved_spec(path: Path) -> dict:
    """The spec a checkpoint was written with (its resolved batch size among it)."""
    try:
        return json.loads((path / "state.json").read_text())["spec"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None


def load(path: Path, model: nn.Module, optimizer: optim.Optimizer) -> tuple[Progress, dict]:
    """Restore weights, optimizer state and RNG from `path`; returns the progress and the spec it was saved with."""
    try:
        state = json.loads((path / "state.json").read_text())
        weights = mx.load(str(path / "weights.safetensors"))
        opt_state = mx.load(str(path / "optimizer.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
    model.load_weights(list(weights.items()), strict=False)
    optimizer.state = tree_unflatten(list(opt_state.items()))
    # mx.random.seed with a 64-bit value sets the key to exactly (high word, low word).
    high, low = state["rng"]
    mx.random.seed((high << 32) | low)
    mx.eval(model.parameters(), optimizer.state)
    return Progress(**state["progress"]), state["spec"]
