"""peftlab: engine. Its public names, as mlx_lm's tuner/__init__.py re-exports the trainer's: `from
services.trainer.engine import train, Loop, cross_entropy`. Resolved on first use (PEP 562), so a caller of
one light submodule (blas, memory, hardware) does not load MLX and mlx_lm with it."""

from importlib import import_module

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
