"""What a comparison or a study asks for, and the checks a request passes before anything is recorded."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.experiment_rules import MAX_SEED, check_arm_names, check_seeds
from services.common.spec import RunSpec
from services.common.validation import (
    Roots,
    check_name,
    check_range,
    check_spec,
    overlay_spec,
    parse_spec,
)

from .pruning import RULES, PruningRule
from .report import OBJECTIVES

BACKENDS = ("mlx", "torch")


@dataclass
class Arm:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    backend: str = "mlx"


@dataclass
class ComparisonRequest:
    name: str = ""
    base: RunSpec = field(default_factory=RunSpec)
    arms: list[Arm] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)
    time_budget_seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ComparisonRequest:
        """From its record (to_dict)."""
        return cls(
            **{
                **values,
                "base": parse_spec(values.get("base", {}), "base"),
                "arms": [Arm(**a) for a in values.get("arms", [])],
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """What the experiment's record keeps: the base as its given fields, so an arm's override of the
        method still gets that method's defaults."""
        return {**asdict(self), "base": self.base.given()}

    def spec_of(self, arm: Arm, seed: int) -> RunSpec:
        """The spec of one cell: the base, the arm's overrides, the seed."""
        return overlay_spec(self.base, {**arm.overrides, "seed": seed})


@dataclass
class Objective:
    name: str = "best_valid_loss"
    direction: str = "minimize"  # minimize | maximize


@dataclass
class StudyRequest:
    name: str = ""
    base: RunSpec = field(default_factory=RunSpec)
    space: dict[str, Any] = field(default_factory=dict)  # SearchSpace as JSON (optimizer.proto's field names)
    n_trials: int = 0
    parallelism: int = 1
    objectives: list[Objective] = field(default_factory=list)
    pruning: PruningRule = field(default_factory=PruningRule)
    seed: int = 0
    placement: dict[str, Any] = field(default_factory=dict)
    time_budget_seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyRequest:
        return cls(
            **{
                **values,
                "base": parse_spec(values.get("base", {}), "base"),
                "objectives": [Objective(**o) for o in values.get("objectives", [])],
                "pruning": PruningRule(**values.get("pruning", {})),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "base": self.base.given()}

    def parameter_names(self) -> list[str]:
        return [p.get("name", "") for p in self.space.get("parameters", [])]


def params_key(params: dict[str, Any]) -> str:
    """Canonical text of a configuration (1 and 1.0 are the same value, True and 1 are not)."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return v
        return float(v)

    return json.dumps({k: norm(v) for k, v in params.items()}, sort_keys=True)


def _check_spec(spec: RunSpec, roots: Roots, field_name: str) -> None:
    """Path confinement (the rules were checked where the spec was decoded). Existence of the model and
    data dirs is the gateway's to check (they live on its machine and the trainers'), at submission."""
    check_spec(spec, roots, field_name, must_exist=False)


def check_comparison(request: ComparisonRequest, roots: Roots) -> ComparisonRequest:
    check_name(request.name)
    check_arm_names([arm.name for arm in request.arms])
    for i, arm in enumerate(request.arms):
        arm.backend = arm.backend or "mlx"
        if arm.backend not in BACKENDS:
            raise InvalidArgument(
                f"must be one of {', '.join(BACKENDS)}, got {arm.backend!r}", f"arms[{i}].backend"
            )
    request.seeds = check_seeds(request.seeds)
    if not math.isfinite(request.time_budget_seconds) or request.time_budget_seconds < 0:
        raise InvalidArgument(f"must be >= 0, got {request.time_budget_seconds}", "time_budget_seconds")
    _check_spec(request.base, roots, "base")
    for i, arm in enumerate(request.arms):
        where = f"arms[{i}].overrides"
        _check_spec(overlay_spec(request.base, arm.overrides, where), roots, where)
    return request


def check_study(request: StudyRequest, roots: Roots) -> StudyRequest:
    check_name(request.name)
    check_range(request.n_trials, 1, 1000, "n_trials")
    request.parallelism = request.parallelism or 1
    check_range(request.parallelism, 1, request.n_trials, "parallelism")
    check_range(request.seed, 0, MAX_SEED, "seed")
    if not math.isfinite(request.time_budget_seconds) or request.time_budget_seconds < 0:
        raise InvalidArgument(f"must be >= 0, got {request.time_budget_seconds}", "time_budget_seconds")
    request.objectives = request.objectives or [Objective()]
    names = [o.name for o in request.objectives]
    for i, objective in enumerate(request.objectives):
        if objective.name not in OBJECTIVES:
            raise InvalidArgument(
                f"must be a run metric ({', '.join(sorted(OBJECTIVES))}), got {objective.name!r}",
                f"objectives[{i}].name",
            )
    if len(set(names)) != len(names):
        raise InvalidArgument("objective names must be distinct", "objectives")
    rule = request.pruning
    if rule.rule not in RULES:
        raise InvalidArgument(f"must be one of {', '.join(RULES)}, got {rule.rule!r}", "pruning.rule")
    check_range(rule.min_steps, 0, 10**7, "pruning.min_steps")
    check_range(rule.warmup_trials, 0, 1000, "pruning.warmup_trials")
    parameters = request.parameter_names()
    if not parameters:
        raise InvalidArgument("must have at least one parameter", "space.parameters")
    fields = set(RunSpec.field_names())
    for i, name in enumerate(parameters):
        if name not in fields:
            raise InvalidArgument(f"{name!r} is not a RunSpec field", f"space.parameters[{i}].name")
    _check_spec(request.base, roots, "base")
    return request
