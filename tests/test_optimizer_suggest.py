"""Suggest as a pure function: determinism, the space-filling start, distinct batches, failed trials
penalized, several objectives, and bad requests named precisely."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.optimizer.space import Condition, Parameter, SearchSpace, SpaceEncoder
from services.optimizer.suggest import SuggestRequest, suggest
from services.optimizer.trials import Direction, Objective, Trial, TrialStatus

BRANIN_SPACE = SearchSpace((Parameter.real("x1", -5.0, 10.0), Parameter.real("x2", 0.0, 15.0)))
LINE = SearchSpace((Parameter.real("x", 0.0, 1.0),))
MIXED = SearchSpace(
    (
        Parameter.categorical("method", ("lora", "dora", "full")),
        Parameter.real("learning_rate", 1e-6, 1e-2, log=True),
        Parameter.integer("rank", 1, 128, log=True, condition=Condition("method", ("lora", "dora"))),
    )
)


def branin(p: dict) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def mixed_loss(p: dict) -> float:
    loss = {"lora": 1.0, "dora": 0.95, "full": 1.1}[p["method"]] + 0.1 * (
        math.log10(p["learning_rate"]) + 4
    ) ** 2
    if "rank" in p:
        loss += 0.02 * (math.log2(p["rank"]) - 4) ** 2
    return loss


def run_study(space: SearchSpace, fn, n: int, seed: int = 0, **kw) -> list[Trial]:
    trials: list[Trial] = []
    for _ in range(n):
        s = suggest(SuggestRequest(space, trials, seed=seed, **kw)).suggestions[0]
        trials.append(Trial(s.params, values={"valid_loss": fn(s.params)}))
    return trials


@pytest.fixture(scope="module")
def branin_history() -> list[Trial]:
    return run_study(BRANIN_SPACE, branin, 12)


def test_design_phase_is_seeded_and_continues_one_sequence():
    first = suggest(SuggestRequest(BRANIN_SPACE, (), n=3, seed=7)).suggestions
    assert [s.source for s in first] == ["design"] * 3
    assert first == suggest(SuggestRequest(BRANIN_SPACE, (), n=3, seed=7)).suggestions
    assert first != suggest(SuggestRequest(BRANIN_SPACE, (), n=3, seed=8)).suggestions
    # Sending the first point back as a trial moves the design on by one, to the batch's second point.
    done = [Trial(first[0].params, values={"valid_loss": 1.0})]
    nxt = suggest(SuggestRequest(BRANIN_SPACE, done, n=1, seed=7)).suggestions[0]
    assert nxt.params == first[1].params


def test_same_request_and_seed_give_the_same_answer(branin_history):
    req = SuggestRequest(BRANIN_SPACE, branin_history, n=2, seed=3)
    a, b = suggest(req), suggest(req)
    assert a.suggestions == b.suggestions
    assert all(s.source == "model" for s in a.suggestions)
    assert all(math.isfinite(s.predicted_mean) and s.predicted_std >= 0 for s in a.suggestions)
    assert set(a.model.length_scales) == {"x1", "x2"}


def test_model_phase_improves_on_branin(branin_history):
    trials = list(branin_history)
    for _ in range(10):
        s = suggest(SuggestRequest(BRANIN_SPACE, trials, seed=0)).suggestions[0]
        trials.append(Trial(s.params, values={"valid_loss": branin(s.params)}))
    best_design = min(t.values["valid_loss"] for t in trials[:4])
    best = min(t.values["valid_loss"] for t in trials)
    assert best < 0.398 + 0.1 < best_design


@pytest.mark.parametrize("history", ["design", "model"])
def test_batch_suggestions_are_distinct_and_avoid_running_trials(branin_history, history):
    trials = [] if history == "design" else list(branin_history)
    running = Trial({"x1": 3.0, "x2": 2.0}, status=TrialStatus.RUNNING)
    out = suggest(SuggestRequest(BRANIN_SPACE, [*trials, running], n=6, seed=1)).suggestions
    assert len(out) == 6
    enc = SpaceEncoder(BRANIN_SPACE)
    X = np.array([enc.encode(s.params) for s in out] + [enc.encode(running.params)])
    gaps = np.max(np.abs(X[:, None] - X[None, :]), axis=-1) + np.eye(len(X))
    assert gaps.min() > 0.01  # pending points (batch and running) differ by > 1% of some parameter's range
    for t in trials:
        assert all(
            abs(s.params["x1"] - t.params["x1"]) + abs(s.params["x2"] - t.params["x2"]) > 1e-6 for s in out
        )


def test_failed_trials_push_suggestions_away():
    f = lambda p: (p["x"] - 0.5) ** 2  # noqa: E731
    base = [Trial({"x": x}, values={"valid_loss": f({"x": x})}) for x in (0.05, 0.25, 0.4, 0.75, 0.95)]
    free = suggest(SuggestRequest(LINE, base, seed=0, n_startup=4)).suggestions[0].params["x"]
    assert abs(free - 0.5) < 0.06  # the model goes for the optimum
    failed = Trial({"x": 0.5}, status=TrialStatus.FAILED)
    pushed = suggest(SuggestRequest(LINE, [*base, failed], seed=0, n_startup=4)).suggestions[0].params["x"]
    assert abs(pushed - 0.5) > abs(free - 0.5) + 0.02
    # A pruned trial with no value counts as failed too.
    pruned = Trial({"x": 0.5}, status=TrialStatus.PRUNED)
    assert (
        suggest(SuggestRequest(LINE, [*base, pruned], seed=0, n_startup=4)).suggestions[0].params["x"]
        == pushed
    )


def test_mixed_space_with_conditions():
    trials = run_study(MIXED, mixed_loss, 14, seed=2)
    for t in trials:
        assert ("rank" in t.params) == (t.params["method"] != "full")
    assert min(t.values["valid_loss"] for t in trials) < 1.1
    out = suggest(SuggestRequest(MIXED, trials, n=4, seed=2)).suggestions
    assert len({tuple(sorted(s.params.items())) for s in out}) == 4


def test_maximize_is_respected():
    objective = (Objective("accuracy", Direction.MAXIMIZE),)
    trials = [
        Trial({"x": x}, values={"accuracy": 1 - (x - 0.3) ** 2}) for x in (0.0, 0.2, 0.45, 0.6, 0.8, 1.0)
    ]
    s = suggest(SuggestRequest(LINE, trials, objectives=objective, n_startup=4)).suggestions[0]
    assert abs(s.params["x"] - 0.3) < 0.1
    assert 0.9 < s.predicted_mean <= 1.05  # in the objective's units and sign


def test_several_objectives_give_the_front_and_spread_weights():
    objectives = (Objective("valid_loss"), Objective("wall_time_s"))
    # Loss falls and time rises with x: every trial is a trade-off except the dominated one at index 3.
    xs = [0.1, 0.3, 0.5, 0.55, 0.7, 0.9]
    trials = [Trial({"x": x}, values={"valid_loss": 1 - x, "wall_time_s": 10 * x}) for x in xs]
    trials[3] = Trial({"x": 0.55}, values={"valid_loss": 0.6, "wall_time_s": 9.0})
    res = suggest(SuggestRequest(LINE, trials, objectives=objectives, n=3, seed=0, n_startup=4))
    assert res.pareto_front == [0, 1, 2, 4, 5]
    assert len(res.suggestions) == 3
    weights = [s.weights for s in res.suggestions]
    assert len(set(weights)) == 3 and all(math.isclose(sum(w), 1.0) for w in weights)
    fixed = suggest(SuggestRequest(LINE, trials, objectives=objectives, weights=(1.0, 0.0), n_startup=4))
    assert fixed.suggestions[0].weights == (1.0, 0.0)
    assert fixed.suggestions[0].params["x"] > 0.8  # all weight on the loss: go where loss is lowest


def test_an_exhausted_discrete_space_says_so():
    space = SearchSpace((Parameter.categorical("m", ("a", "b")),))
    trials = [Trial({"m": m}, values={"valid_loss": 1.0}) for m in ("a", "b")]
    res = suggest(SuggestRequest(space, trials, n_startup=1))
    assert res.suggestions == [] and res.notes


def test_a_space_of_one_point_is_proposed_once_then_says_so():
    # Every parameter fixed: a one-value choice, a one-value integer range, a range too narrow to resolve.
    space = SearchSpace(
        (
            Parameter.categorical("method", ("lora",)),
            Parameter.integer("rank", 8, 8),
            Parameter.real("learning_rate", 1e-3, 1e-3 * (1 + 1e-9)),
        )
    )
    first = suggest(SuggestRequest(space, []))
    assert [s.params["method"] for s in first.suggestions] == ["lora"]
    assert first.suggestions[0].params["rank"] == 8
    tried = [Trial(first.suggestions[0].params, values={"valid_loss": 1.0})]
    again = suggest(SuggestRequest(space, tried))
    assert again.suggestions == [] and "tried" in again.notes[0]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"space": SearchSpace(())}, "space.parameters", "empty"),
        (
            {"trials": [Trial({"x": 0.5}, values={"valid_loss": math.nan})]},
            "trials[0].values[valid_loss]",
            "finite",
        ),
        (
            {"trials": [Trial({"x": 0.5}, values={"loss": 1.0})]},
            "trials[0].values[valid_loss]",
            "needs a value",
        ),
        (
            {"trials": [Trial({"x": 0.5, "y": 1}, values={"valid_loss": 1.0})]},
            "trials[0].params[y]",
            "unknown",
        ),
        (
            {"trials": [Trial({"x": 2.0}, trial_id="t7", values={"valid_loss": 1.0})]},
            "trials[t7].params[x]",
            "outside",
        ),
        ({"n": 0}, "n", "[1, 64]"),
        ({"objectives": ()}, "objectives", "at least one"),
        ({"objectives": (Objective("a"), Objective("a"))}, "objectives", "duplicate"),
        ({"weights": (1.0, 2.0)}, "weights", "one per objective"),
    ],
)
def test_bad_requests_name_the_problem(kwargs, field, words):
    req = SuggestRequest(**{"space": LINE, **kwargs})
    with pytest.raises(InvalidArgument) as info:
        suggest(req)
    assert info.value.field == field
    assert words in info.value.message
