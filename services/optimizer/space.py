"""Search spaces: parameters (float, int, categorical; linear or log), conditions, and the map to [0, 1] features.

The Gaussian process sees every configuration as a point in [0, 1]^d: floats and ints take one feature each
(scaled in log space when `log`), a categorical with k > 1 choices takes k one-hot features, and a
parameter whose condition is off takes a fixed value (0.5, or all zeros for a categorical) so that its
inactive setting never looks like a real one. `snap` projects any point onto the set of valid configurations
(ints rounded, one-hot vertices, conditions applied), so the model is only ever asked about configurations
that can actually be trained (the "transform inside the kernel" of Garrido-Merchán & Hernández-Lobato, 2020).
A parameter with a single possible value (an int or float with low == high, a float range narrower than a
millionth of its magnitude, a categorical with one choice) takes no feature at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from services.common.errors import InvalidArgument

Value = str | int | float | bool


# Input bounds a caller can reach: a categorical's choices, and a range's magnitude (its width must be finite).
MAX_CHOICES = 256
MAX_BOUND = 1e300


class Kind(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Condition:
    """The parameter is active only when `parent` (a categorical) is active and takes one of `values`."""

    parent: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True)
class Parameter:
    """One dimension of a search space. Build with `Parameter.real`, `.integer` or `.categorical`."""

    name: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Value, ...] = ()
    condition: Condition | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "choices", tuple(self.choices))

    @classmethod
    def real(
        cls, name: str, low: float, high: float, *, log: bool = False, condition: Condition | None = None
    ) -> Parameter:
        return cls(name, Kind.FLOAT, low=low, high=high, log=log, condition=condition)

    @classmethod
    def integer(
        cls, name: str, low: int, high: int, *, log: bool = False, condition: Condition | None = None
    ) -> Parameter:
        return cls(name, Kind.INT, low=low, high=high, log=log, condition=condition)

    @classmethod
    def categorical(
        cls, name: str, choices: Sequence[Value], *, condition: Condition | None = None
    ) -> Parameter:
        return cls(name, Kind.CATEGORICAL, choices=tuple(choices), condition=condition)


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters. Order matters only for determinism; conditions may refer either way."""

    parameters: tuple[Parameter, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", tuple(self.parameters))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]


def value_key(value: Value) -> tuple[str, object]:
    """A comparison key that keeps True apart from 1 but lets 1 and 1.0 match (proto ints and doubles)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("str", value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_space(space: SearchSpace) -> list[int]:
    """Checks the space and returns its parameters' indices with every parent before its children.

    Raises InvalidArgument naming the parameter and the field at fault.
    """
    if not space.parameters:
        raise InvalidArgument(
            "the search space is empty; give at least one parameter", field="space.parameters"
        )
    seen: dict[str, Parameter] = {}
    for i, p in enumerate(space.parameters):
        where = f"space.parameters[{p.name or i}]"
        if not p.name:
            raise InvalidArgument("a parameter needs a non-empty name", field=f"space.parameters[{i}].name")
        if p.name in seen:
            raise InvalidArgument(f"duplicate parameter name {p.name!r}", field=f"{where}.name")
        seen[p.name] = p
        if p.kind is Kind.CATEGORICAL:
            if len(p.choices) > MAX_CHOICES:
                # Each choice is a one-hot feature of the GP: thousands make Suggest's matrices explode.
                raise InvalidArgument(
                    f"at most {MAX_CHOICES} choices per categorical, got {len(p.choices)}",
                    field=f"{where}.choices",
                )
            if not p.choices:
                raise InvalidArgument(
                    "a categorical parameter needs at least one choice", field=f"{where}.choices"
                )
            keys = [value_key(c) for c in p.choices]
            if len(set(keys)) != len(keys):
                raise InvalidArgument("choices must be distinct", field=f"{where}.choices")
            for c in p.choices:
                if _is_number(c) and not math.isfinite(c):
                    raise InvalidArgument(f"choice {c!r} is not finite", field=f"{where}.choices")
            continue
        if not (_is_number(p.low) and _is_number(p.high)) or not (
            math.isfinite(p.low) and math.isfinite(p.high)
        ):
            raise InvalidArgument(
                f"low and high must be finite numbers, got {p.low!r}, {p.high!r}", field=f"{where}.low"
            )
        if p.low > p.high:
            raise InvalidArgument(f"low ({p.low}) > high ({p.high})", field=f"{where}.low")
        if max(abs(p.low), abs(p.high)) > MAX_BOUND:
            # high - low must stay finite (1e308 - -1e308 overflows to inf and the scaling to NaN).
            raise InvalidArgument(
                f"bounds must lie within ±{MAX_BOUND:g}, got {p.low!r}, {p.high!r}", field=f"{where}.low"
            )
        if p.kind is Kind.INT and (float(p.low) != int(p.low) or float(p.high) != int(p.high)):
            raise InvalidArgument(
                f"an int parameter needs integer bounds, got {p.low}, {p.high}", field=f"{where}.low"
            )
        if p.log and p.low <= 0:
            raise InvalidArgument(f"a log-scale parameter needs low > 0, got {p.low}", field=f"{where}.low")
    for p in space.parameters:
        if p.condition is None:
            continue
        where = f"space.parameters[{p.name}].condition"
        parent = seen.get(p.condition.parent)
        if parent is None:
            raise InvalidArgument(f"unknown parent parameter {p.condition.parent!r}", field=f"{where}.parent")
        if parent.kind is not Kind.CATEGORICAL:
            raise InvalidArgument(f"parent {parent.name!r} must be categorical", field=f"{where}.parent")
        if not p.condition.values:
            raise InvalidArgument("a condition needs at least one parent value", field=f"{where}.values")
        parent_keys = {value_key(c) for c in parent.choices}
        for v in p.condition.values:
            if value_key(v) not in parent_keys:
                raise InvalidArgument(f"{v!r} is not a choice of {parent.name!r}", field=f"{where}.values")
    # Parents first; a cycle means some parameter can never be decided.
    order: list[int] = []
    placed: set[str] = set()
    pending = list(range(len(space.parameters)))
    while pending:
        ready = [
            i
            for i in pending
            if space.parameters[i].condition is None or space.parameters[i].condition.parent in placed
        ]
        if not ready:
            names = ", ".join(space.parameters[i].name for i in pending)
            raise InvalidArgument(f"conditions form a cycle among: {names}", field="space.parameters")
        order.extend(ready)
        placed.update(space.parameters[i].name for i in ready)
        pending = [i for i in pending if i not in ready]
    return order


def _to_scale(p: Parameter, v: np.ndarray | float) -> np.ndarray | float:
    return np.log(v) if p.log else v


def _from_scale(p: Parameter, t: np.ndarray | float) -> np.ndarray | float:
    return np.exp(t) if p.log else t


@dataclass(frozen=True)
class _Slot:
    """Where one parameter lives in the feature vector."""

    param: Parameter
    start: int
    width: int  # 0 for a parameter with a single possible value


class SpaceEncoder:
    """Maps configurations (name -> value) to and from [0, 1]^dim features for one validated space."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.order = validate_space(space)
        self.slots: list[_Slot] = []
        start = 0
        for p in space.parameters:
            if p.kind is Kind.CATEGORICAL:
                width = len(p.choices) if len(p.choices) > 1 else 0
            else:
                # A range too narrow to resolve in floating point (in the parameter's own scale) is a fixed
                # value: features there could not round-trip through decode/encode.
                lo, hi = _to_scale(p, float(p.low)), _to_scale(p, float(p.high))
                resolvable = hi - lo > 1e-6 * max(abs(lo), abs(hi)) and p.high - p.low > 1e-6 * max(
                    abs(p.low), abs(p.high)
                )
                width = 1 if (p.high > p.low if p.kind is Kind.INT else resolvable) else 0
            self.slots.append(_Slot(p, start, width))
            start += width
        self.dim = start
        self._by_name = {s.param.name: s for s in self.slots}
        self._choice_index = {
            s.param.name: {value_key(c): j for j, c in enumerate(s.param.choices)}
            for s in self.slots
            if s.param.kind is Kind.CATEGORICAL
        }
        # Parent values that switch each conditional parameter on (comparison keys), computed once: a
        # 200-trial request checks and encodes every trial, and this was the hot spot there.
        self._allowed = {
            s.param.name: frozenset(value_key(v) for v in s.param.condition.values)
            for s in self.slots
            if s.param.condition is not None
        }

    # ---- features of each kind
    @property
    def float_dims(self) -> list[int]:
        """Feature indices of float parameters: the ones a gradient-based optimizer may move freely."""
        return [s.start for s in self.slots if s.param.kind is Kind.FLOAT and s.width]

    @property
    def discrete_slots(self) -> list[_Slot]:
        """Int and categorical parameters with more than one value: searched coordinate-wise."""
        return [s for s in self.slots if s.width and s.param.kind is not Kind.FLOAT]

    def slot_options(self, slot: _Slot, limit: int = 64) -> np.ndarray:
        """Feature values (rows of width `slot.width`) a discrete parameter can take; at most `limit` for ints."""
        p = slot.param
        if p.kind is Kind.CATEGORICAL:
            return np.eye(slot.width)
        count = int(p.high) - int(p.low) + 1
        spaced = np.geomspace if p.log else np.linspace  # even steps in the scale the parameter lives in
        values = np.unique(np.round(spaced(p.low, p.high, min(count, limit))))
        return self._scale_to_unit(p, values)[:, None]

    # ---- scalar maps
    def _scale_to_unit(self, p: Parameter, v: np.ndarray) -> np.ndarray:
        lo, hi = _to_scale(p, float(p.low)), _to_scale(p, float(p.high))
        return (np.asarray(_to_scale(p, np.asarray(v, dtype=float))) - lo) / (hi - lo)

    def _unit_to_scale(self, p: Parameter, u: np.ndarray) -> np.ndarray:
        lo, hi = _to_scale(p, float(p.low)), _to_scale(p, float(p.high))
        return np.asarray(_from_scale(p, lo + np.clip(u, 0.0, 1.0) * (hi - lo)))

    # ---- configurations <-> features
    def is_active(self, config: Mapping[str, Value], name: str) -> bool:
        cond = self._by_name[name].param.condition
        if cond is None:
            return True
        if cond.parent not in config or not self.is_active(config, cond.parent):
            return False
        return value_key(config[cond.parent]) in self._allowed[name]

    def encode(self, config: Mapping[str, Value]) -> np.ndarray:
        """Features of a configuration that `check_config` accepted (inactive parameters may be absent)."""
        x = np.zeros(self.dim)
        for s in self.slots:
            if not s.width:
                continue
            p = s.param
            active = self.is_active(config, p.name)
            if p.kind is Kind.CATEGORICAL:
                if active:
                    x[s.start + self._choice_index[p.name][value_key(config[p.name])]] = 1.0
            elif active:
                v, lo, hi = float(config[p.name]), float(p.low), float(p.high)
                if p.log:
                    v, lo, hi = math.log(v), math.log(lo), math.log(hi)
                x[s.start] = (v - lo) / (hi - lo)
            else:
                x[s.start] = 0.5
        return x

    def decode(self, x: np.ndarray) -> dict[str, Value]:
        """The configuration at (snapped) features `x`; only active parameters appear."""
        x = self.snap(np.asarray(x, dtype=float)[None, :])[0]
        config: dict[str, Value] = {}
        for i in self.order:
            s = self.slots[i]
            p = s.param
            if p.condition is not None:
                parent = config.get(p.condition.parent)
                if parent is None or value_key(parent) not in self._allowed[p.name]:
                    continue
            if p.kind is Kind.CATEGORICAL:
                config[p.name] = (
                    p.choices[int(np.argmax(x[s.start : s.start + s.width]))] if s.width else p.choices[0]
                )
            elif p.kind is Kind.INT:
                config[p.name] = (
                    int(self._int_from_unit(p, x[s.start : s.start + 1])[0]) if s.width else int(p.low)
                )
            else:
                v = float(self._unit_to_scale(p, x[s.start : s.start + 1])[0]) if s.width else float(p.low)
                config[p.name] = min(max(v, float(p.low)), float(p.high))
        return config

    def _int_from_unit(self, p: Parameter, u: np.ndarray) -> np.ndarray:
        return np.clip(np.round(self._unit_to_scale(p, u)), p.low, p.high)

    def snap(self, X: np.ndarray) -> np.ndarray:
        """Projects rows of features onto valid configurations (vectorized; idempotent)."""
        X = np.clip(np.array(X, dtype=float, copy=True), 0.0, 1.0)
        m = X.shape[0]
        chosen: dict[str, np.ndarray] = {}
        for s in self.slots:
            p = s.param
            if p.kind is Kind.CATEGORICAL:
                if s.width:
                    block = X[:, s.start : s.start + s.width]
                    idx = np.argmax(block, axis=1)
                    X[:, s.start : s.start + s.width] = np.eye(s.width)[idx]
                else:
                    idx = np.zeros(m, dtype=int)
                chosen[p.name] = idx
            elif p.kind is Kind.INT and s.width:
                X[:, s.start] = self._scale_to_unit(p, self._int_from_unit(p, X[:, s.start]))
        active = self._active_mask(chosen, m)
        for s in self.slots:
            if s.width and s.param.condition is not None:
                off = ~active[s.param.name]
                X[off, s.start : s.start + s.width] = 0.0 if s.param.kind is Kind.CATEGORICAL else 0.5
        return X

    def _active_mask(self, chosen: Mapping[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
        active: dict[str, np.ndarray] = {}
        for i in self.order:
            p = self.space.parameters[i]
            if p.condition is None:
                active[p.name] = np.ones(m, dtype=bool)
                continue
            parent = self._by_name[p.condition.parent].param
            allowed = [self._choice_index[parent.name][value_key(v)] for v in p.condition.values]
            active[p.name] = active[parent.name] & np.isin(chosen[parent.name], allowed)
        return active

    def from_unit_cube(self, U: np.ndarray) -> np.ndarray:
        """Maps design points in [0, 1)^n_params (one column per parameter) to valid features.

        Each value of an int or categorical gets an equal share of its column, so a Sobol design stays
        balanced over discrete choices too.
        """
        U = np.asarray(U, dtype=float)
        X = np.zeros((U.shape[0], self.dim))
        for j, s in enumerate(self.slots):
            if not s.width:
                continue
            p, u = s.param, np.clip(U[:, j], 0.0, 1.0 - 1e-12)
            if p.kind is Kind.CATEGORICAL:
                X[np.arange(len(u)), s.start + np.floor(u * s.width).astype(int)] = 1.0
            elif p.kind is Kind.INT:
                # Half a step beyond each end gives the end values a full share (log ints have low >= 1).
                lo, hi = _to_scale(p, p.low - 0.5), _to_scale(p, p.high + 0.5)
                v = np.clip(np.round(_from_scale(p, lo + u * (hi - lo))), p.low, p.high)
                X[:, s.start] = self._scale_to_unit(p, v)
            else:
                X[:, s.start] = u
        return self.snap(X)

    # ---- checking incoming configurations
    def check_config(self, params: Mapping[str, Value], where: str) -> dict[str, Value]:
        """Validates a configuration from a trial; returns it with inactive parameters dropped.

        Unknown names, missing active parameters, wrong types and out-of-range values raise InvalidArgument.
        Inactive parameters may be present (a trainer may record every field) and are ignored.
        """
        for name in params:
            if name not in self._by_name:
                raise InvalidArgument(
                    f"unknown parameter {name!r} (not in the space)", field=f"{where}.params[{name}]"
                )
        config: dict[str, Value] = {}
        for i in self.order:
            p = self.space.parameters[i]
            if not self.is_active(config, p.name):
                continue
            if p.name not in params:
                raise InvalidArgument(
                    f"missing a value for active parameter {p.name!r}", field=f"{where}.params[{p.name}]"
                )
            v = params[p.name]
            field_name = f"{where}.params[{p.name}]"
            if p.kind is Kind.CATEGORICAL:
                j = self._choice_index[p.name].get(value_key(v))
                if j is None:
                    raise InvalidArgument(
                        f"{v!r} is not one of the choices {list(p.choices)!r}", field=field_name
                    )
                config[p.name] = p.choices[j]
                continue
            if not _is_number(v) or not math.isfinite(v):
                raise InvalidArgument(f"expected a finite number, got {v!r}", field=field_name)
            if p.kind is Kind.INT and float(v) != int(v):
                raise InvalidArgument(f"expected an integer, got {v!r}", field=field_name)
            if not p.low <= v <= p.high:
                raise InvalidArgument(f"{v!r} is outside [{p.low}, {p.high}]", field=field_name)
            config[p.name] = int(v) if p.kind is Kind.INT else float(v)
        return config
