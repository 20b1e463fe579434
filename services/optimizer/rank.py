"""RecommendRank: a LoRA rank from a short probe run's adapter updates, bounded by the dataset's size.

The rule, in order (every number goes into the explanation):
1. For each adapted layer, the probe's update dW = scale * B A (mlx_lm keeps `lora_a` as in x r and
   `lora_b` as r x out, so dW^T = scale * lora_a @ lora_b) and its singular values. They are computed from
   the r x r core of two thin QR factorizations, never from the full out x in matrix.
2. The layer's effective rank is the smallest k whose top-k singular values hold `energy_threshold` (default
   90%) of the squared Frobenius norm: how many directions the update actually uses.
3. One rank must serve every layer, so take the `layer_quantile` (default 75th percentile) of the layers'
   effective ranks: most layers get all the directions they used, a few outliers do not set the size.
4. If that is within 80% of the probe's own rank, the probe was saturated (a random, unstructured update
   of rank r has effective rank ~0.9 r at 90% energy): the spectrum cannot say how much more would be used,
   so recommend twice the probe rank and say a second probe at that rank would confirm it.
5. Round up to a power of two (the ranks people compare and report).
6. Dataset bound: at most `max_params_per_token` trainable adapter parameters per training token (default
   32, about where QLoRA's Guanaco models sat: r=64 on every linear layer of LLaMA-7B, ~160M parameters, on
   ~5M tokens of OASST1). Beyond that, small datasets are memorized rather than learned. The bound is
   rounded down to a power of two and is never below 1.
7. Clamp to [min_rank, max_rank] and to the smallest layer dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import InvalidArgument
from services.common.lora_spectrum import update_singular_values

SATURATION = 0.8


@dataclass(frozen=True)
class AdapterUpdate:
    """One adapted layer of the probe: its LoRA factors (mlx_lm layout), or the spectrum already computed."""

    name: str
    lora_a: np.ndarray | None = None  # in_features x r
    lora_b: np.ndarray | None = None  # r x out_features
    scale: float = 1.0  # alpha / r as the probe ran it; scales every singular value alike
    singular_values: Sequence[float] = ()  # of dW, instead of the factors
    in_features: int = 0  # needed with singular_values; taken from the factors otherwise
    out_features: int = 0
    probe_rank: int = 0  # needed with singular_values; taken from the factors otherwise


@dataclass(frozen=True)
class RankRequest:
    layers: Sequence[AdapterUpdate]
    energy_threshold: float = 0.9
    layer_quantile: float = 0.75
    train_tokens: int = 0  # 0 = no dataset bound
    max_params_per_token: float = 32.0
    min_rank: int = 1
    max_rank: int = 0  # 0 = no cap beyond the layers' dimensions


@dataclass(frozen=True)
class LayerSpectrum:
    name: str
    probe_rank: int
    effective_rank: int
    energy_at_recommended: float  # share of the update's energy the recommended rank would capture
    singular_values: list[float]  # the top ones (at most 16), largest first


@dataclass(frozen=True)
class RankRecommendation:
    rank: int
    spectrum_rank: int  # the layer-quantile of effective ranks, before rounding and bounds
    probe_rank: int
    saturated: bool
    data_bound: int  # 0 when no dataset size was given
    params_per_rank: int  # trainable parameters one unit of rank costs over the probed layers
    layers: list[LayerSpectrum] = field(default_factory=list)
    explanation: str = ""


def effective_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest k with sum(s[:k]^2) >= energy * sum(s^2); 0 for an all-zero update."""
    s2 = np.sort(np.asarray(singular_values, dtype=float))[::-1] ** 2
    total = float(s2.sum())
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(s2) / total, energy - 1e-12) + 1)


def _check(req: RankRequest) -> None:
    if not req.layers:
        raise InvalidArgument("give at least one adapted layer of the probe run", field="layers")
    if not 0 < req.energy_threshold <= 1:
        raise InvalidArgument(f"must be in (0, 1], got {req.energy_threshold}", field="energy_threshold")
    if not 0 <= req.layer_quantile <= 1:
        raise InvalidArgument(f"must be in [0, 1], got {req.layer_quantile}", field="layer_quantile")
    if req.train_tokens < 0:
        raise InvalidArgument(f"must be >= 0, got {req.train_tokens}", field="train_tokens")
    if not req.max_params_per_token > 0:
        raise InvalidArgument(f"must be > 0, got {req.max_params_per_token}", field="max_params_per_token")
    if req.min_rank < 1 or req.max_rank < 0 or (req.max_rank and req.max_rank < req.min_rank):
        raise InvalidArgument(
            f"need 1 <= min_rank <= max_rank (or max_rank 0), got {req.min_rank}, {req.max_rank}",
            field="min_rank",
        )


def _spectrum(layer: AdapterUpdate, where: str) -> tuple[np.ndarray, int, int, int]:
    """(singular values, probe rank, in, out) of one layer, validated."""
    if layer.lora_a is not None or layer.lora_b is not None:
        if layer.lora_a is None or layer.lora_b is None:
            raise InvalidArgument("give both lora_a and lora_b", field=where)
        a, b = np.asarray(layer.lora_a, dtype=float), np.asarray(layer.lora_b, dtype=float)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.shape[1] == 0:
            raise InvalidArgument(
                f"lora_a {a.shape} and lora_b {b.shape} must be in x r and r x out", field=where
            )
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and math.isfinite(layer.scale)):
            raise InvalidArgument("the factors contain NaN or infinity (did the probe diverge?)", field=where)
        return update_singular_values(a, b, layer.scale), a.shape[1], a.shape[0], b.shape[1]
    s = np.asarray(layer.singular_values, dtype=float)
    if s.size == 0:
        raise InvalidArgument("give lora_a and lora_b, or singular_values", field=where)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InvalidArgument("singular values must be finite and >= 0", field=f"{where}.singular_values")
    if layer.in_features <= 0 or layer.out_features <= 0:
        raise InvalidArgument("in_features and out_features are needed with singular_values", field=where)
    return s, layer.probe_rank or s.size, layer.in_features, layer.out_features


def _pow2_ceil(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0))))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def recommend_rank(req: RankRequest) -> RankRecommendation:
    _check(req)
    spectra, ranks, dims, params_per_rank = [], [], [], 0
    for i, layer in enumerate(req.layers):
        s, probe_rank, d_in, d_out = _spectrum(layer, f"layers[{layer.name or i}]")
        spectra.append(np.sort(s)[::-1])
        ranks.append(probe_rank)
        dims.append(min(d_in, d_out))
        params_per_rank += d_in + d_out
    effective = [effective_rank(s, req.energy_threshold) for s in spectra]
    if max(effective) == 0:
        raise InvalidArgument(
            "every update is zero: the probe did not train (check its learning rate and steps)",
            field="layers",
        )
    probe_rank = max(ranks)
    spectrum_rank = max(1, math.ceil(float(np.quantile(effective, req.layer_quantile))))
    saturated = spectrum_rank >= SATURATION * probe_rank
    wanted = 2 * probe_rank if saturated else spectrum_rank
    rank = _pow2_ceil(wanted)
    data_bound = 0
    if req.train_tokens > 0:
        data_bound = _pow2_floor(req.max_params_per_token * req.train_tokens / params_per_rank)
        rank = min(rank, data_bound)
    upper = min(dims) if not req.max_rank else min(req.max_rank, min(dims))
    rank = int(min(max(rank, req.min_rank), upper))

    layers = []
    for layer, s, r_eff, r_probe in zip(req.layers, spectra, effective, ranks, strict=True):
        s2 = s**2
        captured = float(s2[:rank].sum() / s2.sum()) if s2.sum() > 0 else 1.0
        layers.append(LayerSpectrum(layer.name, r_probe, r_eff, captured, [float(v) for v in s[:16]]))
    explanation = _explain(
        req, effective, probe_rank, spectrum_rank, saturated, wanted, data_bound, params_per_rank, rank
    )
    return RankRecommendation(
        rank, spectrum_rank, probe_rank, saturated, data_bound, params_per_rank, layers, explanation
    )


def _explain(
    req: RankRequest,
    effective: list[int],
    probe_rank: int,
    spectrum_rank: int,
    saturated: bool,
    wanted: int,
    data_bound: int,
    params_per_rank: int,
    rank: int,
) -> str:
    pct = round(100 * req.energy_threshold)
    q = round(100 * req.layer_quantile)
    lines = [
        f"Effective rank of the probe's update (rank {probe_rank}) at {pct}% energy, over {len(effective)} layers: "
        f"min {min(effective)}, median {float(np.median(effective)):g}, max {max(effective)}; "
        f"{q}th percentile {spectrum_rank}."
    ]
    if saturated:
        lines.append(
            f"{spectrum_rank} >= {SATURATION:g} x {probe_rank}: the probe used nearly all its rank, so the need may be "
            f"higher; try {wanted} (2 x probe rank) and re-probe at that rank to confirm."
        )
    lines.append(f"Rounded up to a power of two: {_pow2_ceil(wanted)}.")
    if data_bound:
        lines.append(
            f"Dataset bound: {req.max_params_per_token:g} params/token x {req.train_tokens} tokens / "
            f"{params_per_rank} params per unit of rank = "
            f"{req.max_params_per_token * req.train_tokens / params_per_rank:.1f}, rounded down to {data_bound}."
        )
    lines.append(f"Recommended rank: {rank} ({rank * params_per_rank} trainable adapter parameters).")
    return " ".join(lines)
