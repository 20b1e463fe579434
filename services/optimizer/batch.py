"""RecommendBatchSize: the largest micro-batch that fits a memory budget, and the accumulation to reach a
target effective batch. The memory model is the engine's (services/common/memory.py), the same one
that refuses a run that cannot fit and reports predicted vs measured peaks: one model, never two copies."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.memory import MemoryEstimate, ModelShape, fit_batch_size
from services.common.spec import DEFAULT_TARGET_MODULES, METHODS

GB = 10**9


@dataclass(frozen=True)
class BatchSizeRequest:
    shape: ModelShape
    method: str
    seq_len: int
    memory_budget_bytes: int
    grad_checkpoint: bool = False
    target_effective_batch: int = 0  # 0 = no target: grad accumulation 1
    rank: int = 8
    num_layers: int = -1
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    quant_bits: int = 4
    quant_group_size: int = 32
    dtype_bytes: int = 4
    max_batch: int = 1024


@dataclass(frozen=True)
class BatchSizeRecommendation:
    batch_size: int
    grad_accumulation: int
    largest_fitting_batch: int  # 0 when not even batch 1 fits
    fits: bool
    estimate: MemoryEstimate  # predicted peak at `batch_size`
    explanation: str


def _check(req: BatchSizeRequest) -> None:
    s = req.shape
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "vocab_size",
    ):
        if getattr(s, name) <= 0:
            raise InvalidArgument(f"must be > 0, got {getattr(s, name)}", field=f"model_shape.{name}")
    if req.method not in METHODS:
        raise InvalidArgument(f"unknown method {req.method!r}; one of {', '.join(METHODS)}", field="method")
    checks = [
        (req.seq_len >= 1, "seq_len", f"must be >= 1, got {req.seq_len}"),
        (req.memory_budget_bytes > 0, "memory_budget_gb", "must be > 0"),
        (
            req.target_effective_batch >= 0,
            "target_effective_batch",
            f"must be >= 0, got {req.target_effective_batch}",
        ),
        (1 <= req.rank <= 1024, "rank", f"must be in 1..1024, got {req.rank}"),
        (
            req.num_layers == -1 or req.num_layers >= 1,
            "num_layers",
            f"must be -1 or >= 1, got {req.num_layers}",
        ),
        (req.quant_bits in (4, 8), "quant_bits", f"must be 4 or 8, got {req.quant_bits}"),
        (
            req.quant_group_size in (32, 64, 128),
            "quant_group_size",
            f"must be 32, 64 or 128, got {req.quant_group_size}",
        ),
        (req.dtype_bytes in (2, 4), "dtype_bytes", f"must be 2 or 4, got {req.dtype_bytes}"),
        (1 <= req.max_batch <= 65536, "max_batch", f"must be in 1..65536, got {req.max_batch}"),
    ]
    for ok, name, problem in checks:
        if not ok:
            raise InvalidArgument(problem, field=name)


def recommend_batch_size(req: BatchSizeRequest) -> BatchSizeRecommendation:
    _check(req)
    kwargs = dict(
        grad_checkpoint=req.grad_checkpoint,
        rank=req.rank,
        num_layers=req.num_layers,
        target_modules=req.target_modules,
        quant_bits=req.quant_bits,
        quant_group_size=req.quant_group_size,
        dtype_bytes=req.dtype_bytes,
    )
    largest = fit_batch_size(
        req.shape, req.method, req.seq_len, req.memory_budget_bytes, max_batch=req.max_batch, **kwargs
    )
    fit = fit_batch_size(
        req.shape,
        req.method,
        req.seq_len,
        req.memory_budget_bytes,
        target_effective_batch=req.target_effective_batch,
        max_batch=req.max_batch,
        **kwargs,
    )
    e = fit.estimate
    budget = req.memory_budget_bytes / GB
    parts = (
        f"frozen weights {e.frozen_weights_bytes / GB:.3f} GB, trainable state {e.trainable_bytes / GB:.3f} GB, "
        f"activations {e.activations_bytes / GB:.3f} GB, logits {e.logits_bytes / GB:.3f} GB"
    )
    if not fit.fits:
        hint = [] if req.grad_checkpoint else ["gradient checkpointing"]
        hint += ["a shorter sequence length"] + (["qlora"] if req.method in ("lora", "dora", "full") else [])
        explanation = (
            f"Even batch 1 x {req.seq_len} tokens is predicted to peak at {e.peak_bytes / GB:.3f} GB ({parts}), "
            f"over the {budget:.3f} GB budget; try {', '.join(hint)}."
        )
        return BatchSizeRecommendation(1, fit.grad_accumulation, 0, False, e, explanation)
    explanation = (
        f"Largest micro-batch under {budget:.3f} GB at {req.seq_len} tokens: {largest.batch_size}"
        + (f" (capped at max_batch {req.max_batch})" if largest.batch_size == req.max_batch else "")
        + f". Using {fit.batch_size}"
        + (
            f" x {fit.grad_accumulation} accumulation steps = {fit.batch_size * fit.grad_accumulation} "
            f"(target {req.target_effective_batch})"
            if req.target_effective_batch
            else ""
        )
        + f"; predicted peak {e.peak_bytes / GB:.3f} GB ({parts})."
    )
    return BatchSizeRecommendation(
        fit.batch_size, fit.grad_accumulation, largest.batch_size, True, e, explanation
    )
