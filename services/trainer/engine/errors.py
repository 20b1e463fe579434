"""The engine's error types: each says what a person must change, and maps to one gRPC status upstream."""

from __future__ import annotations

# Spec and dataset errors are domain errors of services/common (the gateway checks datasets too);
# re-exported for the engine's callers.
from services.common.errors import DatasetError, EngineError, SpecError

__all__ = [
    "CheckpointError",
    "DatasetError",
    "EngineError",
    "ModelError",
    "OutOfMemory",
    "RunSuperseded",
    "SpecError",
    "TrainingDiverged",
]


class ModelError(EngineError):
    """The model directory cannot be loaded or does not fit the requested method."""


class CheckpointError(EngineError):
    """No usable checkpoint to resume from, or one written by an incompatible spec."""


class OutOfMemory(EngineError):
    """The predicted peak memory exceeds the budget the run was given."""


class RunSuperseded(EngineError):
    """Another attempt owns the run now (it was taken for lost and resumed elsewhere, into the same run dir on
    a shared root): this process stops at once and writes nothing more there."""


class TrainingDiverged(EngineError):
    """The loss became NaN or infinite; the run fails, and an optimizer treats its region as bad."""
