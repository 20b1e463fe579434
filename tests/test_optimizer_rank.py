"""RecommendRank and the schedule defaults as pure functions: spectra of BA without forming BA, effective
rank at an energy threshold, saturation, the dataset bound, and explanations carrying the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.common.lora_spectrum import update_singular_values
from services.optimizer.rank import (
    AdapterUpdate,
    RankRequest,
    effective_rank,
    recommend_rank,
)
from services.optimizer.schedules import default_space, method_schedule
from services.optimizer.space import SpaceEncoder


def probe_layer(name: str, used: list[float], rank: int = 16, d_in: int = 96, d_out: int = 80, seed: int = 0):
    """A probe whose update dW^T = lora_a @ lora_b has exactly the singular values `used`."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(d_in, rank)))
    v, _ = np.linalg.qr(rng.normal(size=(d_out, rank)))
    s = np.zeros(rank)
    s[: len(used)] = used
    return AdapterUpdate(name, lora_a=u * s, lora_b=v.T)


def test_singular_values_of_the_update_match_a_full_svd():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(8, 30))
    expected = np.linalg.svd(2.5 * a @ b, compute_uv=False)[:8]
    np.testing.assert_allclose(update_singular_values(a, b, 2.5), expected, rtol=1e-10)


def test_effective_rank_at_an_energy_threshold():
    s = np.array([3.0, 2.0, 1.0, 0.1])  # energies 9, 4, 1, 0.01 of 14.01
    assert effective_rank(s, 0.6) == 1
    assert effective_rank(s, 0.9) == 2
    assert effective_rank(s, 0.99) == 3
    assert effective_rank(s, 1.0) == 4
    assert effective_rank(np.zeros(3), 0.9) == 0


def test_rank_follows_the_spectrum_and_explains_it():
    # Energies 25, 16, 9, 4, 1: two values hold 61%, three hold >= 90% of every longer spectrum.
    layers = [probe_layer(f"l{i}", [5, 4, 3, 2, 1][: 2 + i % 4], seed=i) for i in range(8)]
    rec = recommend_rank(RankRequest(layers))
    effective = [layer.effective_rank for layer in rec.layers]
    assert effective == [2, 3, 3, 3, 2, 3, 3, 3]
    assert rec.spectrum_rank == 3 and rec.rank == 4 and not rec.saturated and rec.probe_rank == 16
    assert all(0.9 <= layer.energy_at_recommended <= 1.0 + 1e-12 for layer in rec.layers)
    for number in ("16", "90%", "75th percentile 3", "Recommended rank: 4"):
        assert number in rec.explanation


def test_a_saturated_probe_asks_for_more():
    layers = [probe_layer(f"l{i}", [1.0] * 8, rank=8, seed=i) for i in range(3)]
    rec = recommend_rank(RankRequest(layers))
    assert rec.saturated and rec.rank == 16
    assert "2 x probe rank" in rec.explanation


def test_the_dataset_bounds_the_rank():
    layers = [probe_layer(f"l{i}", [1.0] * 12, seed=i) for i in range(4)]  # wants 16
    per_rank = 4 * (96 + 80)
    rec = recommend_rank(RankRequest(layers, train_tokens=100, max_params_per_token=per_rank * 5 / 100))
    assert rec.params_per_rank == per_rank and rec.data_bound == 4 and rec.rank == 4
    assert "Dataset bound" in rec.explanation
    assert recommend_rank(RankRequest(layers, min_rank=8, train_tokens=100, max_params_per_token=1)).rank == 8


def test_singular_values_can_be_sent_instead_of_factors():
    layer = AdapterUpdate("q", singular_values=(0.0, 3.0, 1.0), in_features=10, out_features=10, probe_rank=8)
    rec = recommend_rank(RankRequest([layer], energy_threshold=0.95))
    assert (
        rec.layers[0].effective_rank == 2
        and rec.rank == 2
        and rec.layers[0].singular_values == [3.0, 1.0, 0.0]
    )


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (RankRequest([]), "layers"),
        (RankRequest([AdapterUpdate("q", lora_a=np.ones((4, 2)))]), "layers[q]"),
        (RankRequest([AdapterUpdate("q", lora_a=np.ones((4, 2)), lora_b=np.ones((3, 4)))]), "layers[q]"),
        (
            RankRequest([AdapterUpdate("q", lora_a=np.full((4, 2), np.nan), lora_b=np.ones((2, 4)))]),
            "layers[q]",
        ),
        (RankRequest([AdapterUpdate("q", lora_a=np.zeros((4, 2)), lora_b=np.zeros((2, 4)))]), "layers"),
        (
            RankRequest(
                [AdapterUpdate("q", singular_values=(1.0,), in_features=4, out_features=4)],
                energy_threshold=0,
            ),
            "energy_threshold",
        ),
        (
            RankRequest([AdapterUpdate("q", singular_values=(-1.0,), in_features=4, out_features=4)]),
            "layers[q].singular_values",
        ),
    ],
)
def test_bad_rank_requests_name_the_field(req, field):
    with pytest.raises(InvalidArgument) as info:
        recommend_rank(req)
    assert info.value.field == field


def test_schedules_per_method():
    lora, full = method_schedule("lora", 1000), method_schedule("full", 1000)
    assert lora.warmup_steps == 30 and full.warmup_steps == 60
    assert (
        full.learning_rate_high <= lora.learning_rate_high / 10
        and full.learning_rate <= lora.learning_rate / 10
    )
    assert method_schedule("lora", 100_000).warmup_steps == 200  # capped
    assert method_schedule("lora", 1).warmup_steps == 0
    with pytest.raises(InvalidArgument):
        method_schedule("prefix", 100)


def test_default_spaces_are_valid_and_conditional():
    space, schedules = default_space(("lora", "dora", "full"), 300)
    enc = SpaceEncoder(space)  # validates
    assert [s.method for s in schedules] == ["lora", "dora", "full"]
    rank = next(p for p in space.parameters if p.name == "rank")
    assert rank.condition is not None and set(rank.condition.values) == {"lora", "dora"}
    assert "rank" not in enc.decode(
        enc.encode({"method": "full", "learning_rate": 1e-5, "warmup_steps": 3, "weight_decay": 0.01})
    )
    single, _ = default_space(("qlora",), 300)
    assert (
        "method" not in single.names
        and next(p for p in single.parameters if p.name == "rank").condition is None
    )
