"""Experiment trackers (TensorBoard, MLflow, W&B) fed from a run's event stream: the same `(kind, data)`
records the trainer writes to Redis, so every run, whoever started it, reaches the trackers its spec names."""

from .sink import RunContext, TrackerError, Trackers, open_trackers

__all__ = ["RunContext", "TrackerError", "Trackers", "open_trackers"]
