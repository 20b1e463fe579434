"""Search spaces: validation errors that name the parameter, and the [0, 1] feature map (round trips,
snapping, conditions), with hypothesis generating spaces and configurations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.optimizer.space import (
    Condition,
    Kind,
    Parameter,
    SearchSpace,
    SpaceEncoder,
    validate_space,
    value_key,
)

ADAPTERS = Condition("method", ("lora", "dora", "qlora"))
LORA_SPACE = SearchSpace(
    (
        Parameter.categorical("method", ("lora", "dora", "qlora", "full")),
        Parameter.real("learning_rate", 1e-6, 1e-2, log=True),
        Parameter.integer("rank", 1, 256, log=True, condition=ADAPTERS),
        Parameter.real("dropout", 0.0, 0.3, condition=ADAPTERS),
        Parameter.integer("batch_size", 1, 64, log=True),
        Parameter.categorical("packing", (True, False)),
    )
)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("space", "field", "words"),
    [
        (SearchSpace(()), "space.parameters", "empty"),
        (
            SearchSpace((Parameter.real("lr", 1.0, 0.5),)),
            "space.parameters[lr].low",
            "low (1.0) > high (0.5)",
        ),
        (SearchSpace((Parameter.real("lr", 0.0, 1.0, log=True),)), "space.parameters[lr].low", "low > 0"),
        (SearchSpace((Parameter.real("lr", 0.0, math.inf),)), "space.parameters[lr].low", "finite"),
        (SearchSpace((Parameter.integer("r", 1.5, 4),)), "space.parameters[r].low", "integer bounds"),
        (SearchSpace((Parameter.categorical("m", ()),)), "space.parameters[m].choices", "at least one"),
        (SearchSpace((Parameter.categorical("m", ("a", "a")),)), "space.parameters[m].choices", "distinct"),
        (
            SearchSpace((Parameter.real("a", 0, 1), Parameter.real("a", 0, 1))),
            "space.parameters[a].name",
            "duplicate",
        ),
        (
            SearchSpace((Parameter.real("r", 0, 1, condition=Condition("method", ("lora",))),)),
            "space.parameters[r].condition.parent",
            "unknown parent",
        ),
        (
            SearchSpace(
                (
                    Parameter.categorical("method", ("lora",)),
                    Parameter.real("r", 0, 1, condition=Condition("method", ("x",))),
                )
            ),
            "space.parameters[r].condition.values",
            "not a choice",
        ),
        (
            SearchSpace(
                (
                    Parameter.categorical("a", ("x", "y"), condition=Condition("b", ("x",))),
                    Parameter.categorical("b", ("x", "y"), condition=Condition("a", ("x",))),
                )
            ),
            "space.parameters",
            "cycle",
        ),
    ],
)
def test_invalid_spaces_name_the_parameter(space, field, words):
    with pytest.raises(InvalidArgument) as info:
        validate_space(space)
    assert info.value.field == field
    assert words in info.value.message


def test_check_config_names_the_problem():
    enc = SpaceEncoder(LORA_SPACE)
    good = {
        "method": "lora",
        "learning_rate": 1e-4,
        "rank": 8,
        "dropout": 0.1,
        "batch_size": 4,
        "packing": True,
    }
    assert enc.check_config(good, "trials[0]") == good
    cases = [
        ({**good, "lora_alpha": 16}, "trials[0].params[lora_alpha]", "unknown parameter"),
        ({k: v for k, v in good.items() if k != "rank"}, "trials[0].params[rank]", "missing"),
        ({**good, "rank": 300}, "trials[0].params[rank]", "outside"),
        ({**good, "rank": 2.5}, "trials[0].params[rank]", "integer"),
        ({**good, "learning_rate": math.nan}, "trials[0].params[learning_rate]", "finite"),
        ({**good, "method": "prefix"}, "trials[0].params[method]", "not one of the choices"),
        ({**good, "packing": 1}, "trials[0].params[packing]", "not one of the choices"),  # 1 is not True
    ]
    for params, field, words in cases:
        with pytest.raises(InvalidArgument) as info:
            enc.check_config(params, "trials[0]")
        assert info.value.field == field, params
        assert words in info.value.message


def test_inactive_parameters_are_dropped_not_rejected():
    enc = SpaceEncoder(LORA_SPACE)
    full = {"method": "full", "learning_rate": 1e-5, "rank": 8, "batch_size": 2, "packing": False}
    assert enc.check_config(full, "t") == {
        "method": "full",
        "learning_rate": 1e-5,
        "batch_size": 2,
        "packing": False,
    }


# ---------------------------------------------------------------- the feature map
def test_lora_space_layout_and_conditions():
    enc = SpaceEncoder(LORA_SPACE)
    assert enc.dim == 4 + 1 + 1 + 1 + 1 + 2  # one-hot method, lr, rank, dropout, batch, one-hot packing
    x = enc.encode({"method": "full", "learning_rate": 1e-4, "batch_size": 8, "packing": True})
    slots = {s.param.name: s for s in enc.slots}
    assert x[slots["rank"].start] == 0.5 and x[slots["dropout"].start] == 0.5  # inactive: imputed
    assert x[slots["learning_rate"].start] == pytest.approx(0.5)  # 1e-4 is mid-way in log space
    assert enc.decode(x) == {
        "method": "full",
        "learning_rate": pytest.approx(1e-4),
        "batch_size": 8,
        "packing": True,
    }


def test_snap_rounds_ints_in_their_scale_and_picks_one_hot():
    enc = SpaceEncoder(LORA_SPACE)
    x = np.full(enc.dim, 0.3)
    snapped = enc.snap(x[None, :])[0]
    config = enc.decode(snapped)
    assert config["method"] in ("lora", "dora", "qlora", "full")
    assert isinstance(config["batch_size"], int) and isinstance(config["packing"], bool)
    np.testing.assert_array_equal(enc.snap(snapped[None, :])[0], snapped)  # idempotent


def test_unit_cube_design_is_balanced_over_choices():
    enc = SpaceEncoder(
        SearchSpace((Parameter.categorical("m", ("a", "b", "c", "d")), Parameter.integer("k", 1, 4)))
    )
    u = (np.arange(16)[:, None] + 0.5) / 16 * np.ones((1, 2))
    configs = [enc.decode(x) for x in enc.from_unit_cube(u)]
    assert sorted(c["m"] for c in configs) == sorted(["a", "b", "c", "d"] * 4)
    assert sorted(c["k"] for c in configs) == sorted([1, 2, 3, 4] * 4)


def test_fixed_parameters_take_no_features():
    space = SearchSpace(
        (Parameter.real("a", 2.0, 2.0), Parameter.integer("b", 3, 3), Parameter.categorical("c", ("x",)))
    )
    enc = SpaceEncoder(space)
    assert enc.dim == 0
    assert enc.decode(np.zeros(0)) == {"a": 2.0, "b": 3, "c": "x"}


# ---------------------------------------------------------------- properties
@st.composite
def spaces(draw) -> SearchSpace:
    params: list[Parameter] = []
    for i in range(draw(st.integers(1, 6))):
        cats = [p for p in params if p.kind is Kind.CATEGORICAL]
        condition = None
        if cats and draw(st.booleans()):
            parent = draw(st.sampled_from(cats))
            values = draw(st.lists(st.sampled_from(parent.choices), min_size=1, unique_by=value_key))
            condition = Condition(parent.name, tuple(values))
        kind = draw(st.sampled_from(["float", "int", "categorical"]))
        log = draw(st.booleans())
        name = f"p{i}"
        if kind == "float":
            low = draw(st.floats(1e-6, 1e3)) if log else draw(st.floats(-1e3, 1e3))
            high = low * draw(st.floats(1.0, 1e4)) if log else low + draw(st.floats(0.0, 1e3))
            params.append(Parameter.real(name, low, high, log=log, condition=condition))
        elif kind == "int":
            low = draw(st.integers(1, 100)) if log else draw(st.integers(-100, 100))
            high = low + draw(st.integers(0, 1000))
            params.append(Parameter.integer(name, low, high, log=log, condition=condition))
        else:
            choices = draw(
                st.lists(
                    st.one_of(st.text(max_size=4), st.integers(-5, 5), st.booleans(), st.floats(-1, 1)),
                    min_size=1,
                    max_size=5,
                    unique_by=value_key,
                )
            )
            params.append(Parameter.categorical(name, choices, condition=condition))
    return SearchSpace(tuple(params))


@st.composite
def space_and_config(draw):
    space = draw(spaces())
    enc = SpaceEncoder(space)
    config: dict = {}
    for i in enc.order:
        p = space.parameters[i]
        if not enc.is_active(config, p.name):
            continue
        if p.kind is Kind.CATEGORICAL:
            config[p.name] = draw(st.sampled_from(p.choices))
        elif p.kind is Kind.INT:
            config[p.name] = draw(st.integers(int(p.low), int(p.high)))
        else:
            config[p.name] = draw(st.floats(p.low, p.high))
    return space, config


def _same_config(space: SearchSpace, a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    bounds = {p.name: max(abs(p.low), abs(p.high)) for p in space.parameters}
    for k, v in a.items():
        w = b[k]
        if isinstance(v, float) and not isinstance(w, bool):
            # A float range narrower than a millionth of its magnitude is one fixed value (space.py).
            if not math.isclose(v, w, rel_tol=1e-9, abs_tol=max(1e-9, 1e-6 * bounds[k])):
                return False
        elif value_key(v) != value_key(w) or type(v) is bool is not type(w) is bool:
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(space_and_config())
def test_encode_decode_round_trip(case):
    space, config = case
    enc = SpaceEncoder(space)
    assert enc.check_config(config, "t") == config
    x = enc.encode(config)
    assert x.shape == (enc.dim,)
    assert np.all((x >= 0.0) & (x <= 1.0))
    np.testing.assert_allclose(enc.snap(x[None, :])[0], x, atol=1e-12)  # valid points are fixed points
    assert _same_config(space, enc.decode(x), config)


@settings(max_examples=100, deadline=None)
@given(spaces(), st.integers(0, 2**32 - 1))
def test_any_point_snaps_to_a_valid_configuration(space, seed):
    enc = SpaceEncoder(space)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-0.2, 1.2, size=(8, enc.dim))
    snapped = enc.snap(X)
    np.testing.assert_array_equal(enc.snap(snapped), snapped)
    for x in snapped:
        config = enc.decode(x)
        assert enc.check_config(config, "t") == config
        np.testing.assert_allclose(enc.encode(config), x, atol=1e-9)
    for x in enc.from_unit_cube(rng.random((8, len(space.parameters)))):
        config = enc.decode(x)
        assert enc.check_config(config, "t") == config
