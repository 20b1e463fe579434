"""Trials and objectives: the history a client sends with every request (the optimizer keeps no state)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .space import Value


class TrialStatus(StrEnum):
    COMPLETE = "complete"  # finished; `values` holds every objective
    FAILED = "failed"  # diverged, ran out of memory, crashed: its region is penalized
    PRUNED = "pruned"  # stopped early as unpromising; `values` may hold its last (intermediate) values
    RUNNING = "running"  # in flight on some trainer: suggestions keep away from it


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


@dataclass(frozen=True)
class Objective:
    """A metric to optimize, by its name in `Trial.values` (e.g. `valid_loss`, `wall_time_s`, `peak_memory_gb`)."""

    name: str
    direction: Direction = Direction.MINIMIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction(self.direction))


@dataclass(frozen=True)
class Trial:
    """One configuration that was (or is being) trained, and what came of it."""

    params: Mapping[str, Value]
    status: TrialStatus = TrialStatus.COMPLETE
    values: Mapping[str, float] = field(default_factory=dict)
    trial_id: str = ""  # the client's id, echoed back in Pareto fronts; may be empty

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", TrialStatus(self.status))
