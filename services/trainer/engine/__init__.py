"""peftlab: engine. Its public names, as mlx_lm's tuner/__init__.py re-exports the trainer's: `from
services.trainer.engine import train, Loop, cross_entropy`. Resolved on first use (PEP 562), so a caller of
one light submodule (blas, memory, hardware) does not load MLX and mlx_lm with it."""

import os
from importlib import import_module

# MLX's scheduler orders a graph breadth-first, interleaving up to MLX_BFS_MAX_WIDTH (default 20) independent
# branches; in a training step those are the head's chunks and the blocks' backward pieces, so up to 20 of
# them are alive at once (CPU, 1 layer, 16 head chunks: 593 MiB at 20, 275 MiB at 1). Depth-first (1) keeps
# one at a time. Read by MLX once, at a process's first eval: set before any engine module runs one; an
# explicit setting wins.
os.environ.setdefault("MLX_BFS_MAX_WIDTH", "1")

_EXPORTS = {
    "train": "api",
    "evaluate_run": "api",
    "generate_stream": "api",
    "score_base_model": "api",
    "TrainingCallback": "callbacks",
    "cross_entropy": "losses",
    "full_logits_cross_entropy": "losses",
    "Loop": "training",
    "build_optimizer": "training",
    "evaluate_loss": "training",
    "plan_batches": "training",
    "to_device": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
