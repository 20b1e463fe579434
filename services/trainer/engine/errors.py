"""The engine's error types: each says what a person must change, and maps to one gRPC status upstream."""

from __future__ import annotations

# A spec error is a domain error of services/common (RunSpec lives there); re-exported for the engine's callers.
from services.common.errors import SpecError

__all__ = [
    "CheckpointError",
    "DatasetError",
    "EngineError",
    "ModelError",
    "OutOfMemory",
    "SpecError",
    "TrainingDiverged",
]


class EngineError(Exception):
    """Base class for errors the engine raises on purpose (never for bugs)."""


class DatasetError(EngineError, ValueError):
    """A dataset file is unusable; names the file and, where there is one, the 1-based line."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ModelError(EngineError):
    """The model directory cannot be loaded or does not fit the requested method."""


class CheckpointError(EngineError):
    """No usable checkpoint to resume from, or one written by an incompatible spec."""


class OutOfMemory(EngineError):
    """The predicted peak memory exceeds the budget the run was given."""


class TrainingDiverged(EngineError):
    """The loss became NaN or infinite; the run fails, and an optimizer treats its region as bad."""
