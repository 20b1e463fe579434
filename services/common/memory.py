"""Predicting a run's peak memory before it starts, and the largest batch that fits a budget.

One model, used by the engine (refuse a run that cannot fit, report predicted vs measured) and by the
optimizer service (RecommendBatchSize). It counts what MLX keeps alive at the peak of a training step:

  frozen       base weights at their stored precision (quantized: packed bits + per-group scales/biases)
  trainable    trainable parameters, their gradients and AdamW's two moments
  activations  tensors saved for the backward pass, per token and per adapted block; with gradient
               checkpointing only each block's input is kept, plus one block's worth being recomputed
  logits       the LM head's output and the cross-entropy's temporaries (the biggest single item for small
               models with large vocabularies: B x L x V floats, several times over)
The per-token coefficients were fitted to mx.get_peak_memory() on the CPU backend (tests/test_engine_memory.py
checks the prediction against a measurement within 15% for every method on two model sizes). On a GPU the
compute dtype is bf16 (dtype auto), so hidden/FFN activations count 2 bytes there; the GPU coefficients are
checked with bench/memory_check.py (not fitted yet: see the closing note). Not covered: gradient
checkpointing's real saving (until the step wires it), the unpacked length-bucketed layout (predicted at
max_seq_length, so it over-predicts short data), generation/evaluation peaks, and other processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.common.spec import DEFAULT_TARGET_MODULES, RunSpec

# Fitted on mlx 0.32.4, CPU backend, float32, SmolLM2-135M and the tiny model at batch 2x128 and 4x256.
ACTIVATION_HIDDEN_FACTOR = 10.0  # hidden-sized tensors saved per token per block
ACTIVATION_FFN_FACTOR = 4.0  # intermediate-sized tensors saved per token per block
# With the engine's SwiGLU tail recomputed (engine/recompute.py: llama/qwen2/qwen3/mistral blocks, no dropout)
# about 2.9 fewer intermediate-sized tensors stay per token per block (CPU, float32, a 384/2240 Llama shape: 2.87;
# H200, bf16, the 1.5B shape at 8x512: 2.98, 28.06 -> 21.94 GB measured).
RECOMPUTED_FFN_FACTOR = ACTIVATION_FFN_FACTOR - 2.9
RECOMPUTED_MLP_MODELS = {"llama", "qwen2", "qwen3", "mistral"}
ATTENTION_SCORE_FACTOR = 0.66  # L-long score rows per head per token (the fused attention keeps few)
DORA_OUTPUT_FACTOR = 1.0  # DoRA keeps each adapted module's output (for the magnitude rescale) per token
LOGITS_FACTOR = 4.0  # vocab-sized float32 tensors alive at the loss (logits, log-softmax, its grad, ...)
# The loss (losses.cross_entropy) runs the head in chunks of at most this many logits, each recomputed in the
# backward, unless one chunk holds every position or the head is trainable (full fine-tuning). On the CPU the
# peak then holds one chunk (3 vocab-sized float32 tensors, tiny model: 642 predicted / 643 MiB measured); the
# H200 fit (1.5B, bench/memory_check.py on the chunked step) still sees the whole-batch term: counted so there.
HEAD_CHUNK_ELEMENTS = 1 << 27
# Coefficients that differ by backend (measured: CPU = this machine, SmolLM2-135M and the tiny model; GPU = one
# H200 with MLX CUDA, the ~1.5B Llama shape at 2x512 and 8x512, bench/memory_check.py):
#   qlora      quantized matmuls' extra input-sized copies kept for the backward (none seen on the CPU)
#   gradients  params + 2 AdamW moments + the share of the gradients alive at the peak (the CPU frees
#              activations as they come; CUDA's peak holds all of them)
BACKEND_FACTORS = {
    "cpu": {"qlora": 1.0, "gradients": 3.5, "logits": 3.0, "head_chunked": True},
    "gpu": {"qlora": 1.28, "gradients": 4.0, "logits": LOGITS_FACTOR, "head_chunked": False},
}
RUNTIME_OVERHEAD_BYTES = 20 * 2**20


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool = True

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        heads = config["num_attention_heads"]
        return cls(
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            vocab_size=config["vocab_size"],
            tied_embeddings=config.get("tie_word_embeddings", True),
        )

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection inside a block, by the module path mlx_lm uses."""
        h, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "self_attn.q_proj": (h, q),
            "self_attn.k_proj": (h, kv),
            "self_attn.v_proj": (h, kv),
            "self_attn.o_proj": (q, h),
            "mlp.gate_proj": (h, f),
            "mlp.up_proj": (h, f),
            "mlp.down_proj": (f, h),
        }

    def block_linear_params(self) -> int:
        return sum(i * o for i, o in self.module_dims().values())

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def total_params(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.num_layers * self.block_linear_params() + self.embedding_params() + norms


@dataclass(frozen=True)
class MemoryEstimate:
    frozen_weights_bytes: int  # weights that get no gradient (all of them but the adapters; none for full)
    trainable_bytes: (
        int  # trainable params + AdamW's two moments (+ the grads where they outgrow activations)
    )
    activations_bytes: int
    logits_bytes: int
    overhead_bytes: int
    peak_bytes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def frozen_weight_bytes(
    shape: ModelShape, method: str, dtype_bytes: int, quant_bits: int, group_size: int
) -> int:
    linear = shape.num_layers * shape.block_linear_params()
    rest = shape.total_params() - linear
    if method == "full":
        return 0
    if method != "qlora":
        return shape.total_params() * dtype_bytes
    # Packed weights plus one scale and one bias per group, kept at the compute precision.
    per_element = quant_bits / 8 + 2 * dtype_bytes / group_size
    return int(linear * per_element + rest * dtype_bytes)


def trainable_params(
    shape: ModelShape, method: str, rank: int, num_layers: int, target_modules: tuple[str, ...] | list[str]
) -> int:
    if method == "full":
        return shape.total_params()
    dims = shape.module_dims()
    layers = shape.num_layers if num_layers == -1 else min(num_layers, shape.num_layers)
    per_block = sum(rank * (dims[m][0] + dims[m][1]) for m in target_modules if m in dims)
    if method == "dora":
        per_block += sum(dims[m][1] for m in target_modules if m in dims)  # magnitude vector
    return layers * per_block


def predict_peak_memory(
    shape: ModelShape,
    method: str,
    batch_size: int,
    seq_len: int,
    *,
    grad_checkpoint: bool = False,
    rank: int = 8,
    num_layers: int = -1,
    target_modules: tuple[str, ...] | list[str] = DEFAULT_TARGET_MODULES,
    quant_bits: int = 4,
    quant_group_size: int = 32,
    dtype_bytes: int = 4,
    weights_bytes: int | None = None,  # frozen weights' exact size, when the model is loaded
    backend: str = "cpu",  # "cpu" | "gpu" (Metal or CUDA): see BACKEND_FACTORS
    recomputed_mlp: bool = False,  # the engine recomputes the SwiGLU tail (see RECOMPUTED_FFN_FACTOR)
) -> MemoryEstimate:
    factors = BACKEND_FACTORS.get(backend, BACKEND_FACTORS["cpu"])
    frozen = (
        weights_bytes
        if weights_bytes is not None
        else frozen_weight_bytes(shape, method, dtype_bytes, quant_bits, quant_group_size)
    )
    # Parameters and AdamW's two moments (at the parameter's dtype: fp32 adapters, compute-dtype weights for
    # full fine-tuning) live throughout; the gradients appear while the backward pass frees the activations,
    # so about half of them coexist with the activations at the peak (measured, full fine-tuning of
    # SmolLM2-135M on the CPU at 2x128, 2x256, 4x256: 3.5x the weights fits within 10%, 4x over-predicts
    # by up to 14%).
    param_bytes = dtype_bytes if method == "full" else 4
    params = trainable_params(shape, method, rank, num_layers, target_modules) * param_bytes

    tokens = batch_size * seq_len
    h, f = shape.hidden_size, shape.intermediate_size
    ffn_factor = RECOMPUTED_FFN_FACTOR if recomputed_mlp else ACTIVATION_FFN_FACTOR
    per_token_block = (ACTIVATION_HIDDEN_FACTOR * h + ffn_factor * f) * dtype_bytes
    per_token_block += ATTENTION_SCORE_FACTOR * shape.num_heads * seq_len * 4
    if method == "dora":
        dims = shape.module_dims()
        # Kept at the compute dtype (the H200's 1.5B DoRA: 4 bytes over-predicted by 19%, 2 bytes within 8%).
        per_token_block += (
            DORA_OUTPUT_FACTOR * dtype_bytes * sum(dims[m][1] for m in target_modules if m in dims)
        )
    if method == "qlora":
        per_token_block *= factors["qlora"]
    # Backward needs activations of every block from the first one that has trainable parameters.
    adapted = shape.num_layers if method == "full" or num_layers == -1 else min(num_layers, shape.num_layers)
    if grad_checkpoint:
        # Each block's input stays; one block's internals exist at a time while it is recomputed.
        activations = tokens * (h * dtype_bytes * adapted + per_token_block)
    else:
        activations = tokens * per_token_block * adapted
    head_positions = tokens
    if factors["head_chunked"] and method != "full":
        chunk = 128
        while chunk * 2 * shape.vocab_size <= HEAD_CHUNK_ELEMENTS and chunk < tokens:
            chunk *= 2
        head_positions = min(tokens, chunk)
    logits = int(factors["logits"] * head_positions * shape.vocab_size * 4)
    trainable = int(factors["gradients"] * params)
    overhead = RUNTIME_OVERHEAD_BYTES
    peak = int(frozen + trainable + activations + logits + overhead)
    return MemoryEstimate(int(frozen), int(trainable), int(activations), logits, overhead, peak)


@dataclass(frozen=True)
class BatchFit:
    batch_size: int
    grad_accumulation: int
    estimate: MemoryEstimate
    fits: bool  # False when even batch 1 exceeds the budget (batch_size is then 1)


def fit_batch_size(
    shape: ModelShape,
    method: str,
    seq_len: int,
    budget_bytes: int,
    *,
    target_effective_batch: int = 0,
    max_batch: int = 1024,
    **kwargs,
) -> BatchFit:
    """Largest batch whose predicted peak fits the budget, and the accumulation that reaches the target
    effective batch (batch_size * grad_accumulation >= target)."""
    low, best = 1, 0
    high = max_batch
    while low <= high:  # the prediction is monotone in the batch size
        mid = (low + high) // 2
        if predict_peak_memory(shape, method, mid, seq_len, **kwargs).peak_bytes <= budget_bytes:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    fits = best > 0
    batch = max(best, 1)
    if target_effective_batch > 0:
        batch = min(batch, target_effective_batch)
        accumulation = -(-target_effective_batch // batch)
    else:
        accumulation = 1
    return BatchFit(batch, accumulation, predict_peak_memory(shape, method, batch, seq_len, **kwargs), fits)


def spec_dtype_bytes(spec: RunSpec, gpu: bool) -> int:
    """Bytes per element of the compute dtype: dtype auto is bf16 on a GPU (Metal, CUDA), float32 on the CPU."""
    if spec.dtype == "auto":
        return 2 if gpu else 4
    return 2 if spec.dtype in ("bfloat16", "float16") else 4


def _model_kwargs(
    spec: RunSpec,
    config: dict,
    quantized: bool,
    weights_bytes: int | None,
    dtype_bytes: int | None = None,
    backend: str = "cpu",
) -> dict:
    if dtype_bytes is None:
        dtype_bytes = spec_dtype_bytes(spec, gpu=False)
    return dict(
        shape=ModelShape.from_config(config),
        method="qlora" if quantized and spec.method != "full" else spec.method,
        seq_len=spec.max_seq_length,
        grad_checkpoint=spec.grad_checkpoint,
        rank=spec.rank,
        num_layers=spec.num_layers,
        target_modules=spec.target_modules,
        quant_bits=spec.quant_bits,
        quant_group_size=spec.quant_group_size,
        dtype_bytes=dtype_bytes,
        weights_bytes=weights_bytes,
        backend=backend,
        # Not QLoRA: its measured CPU peak did not move with the recompute (default model 1x128: 521 -> 528 MiB);
        # its peak is not where the activations peak. Unmeasured on a GPU.
        recomputed_mlp=config.get("model_type") in RECOMPUTED_MLP_MODELS
        and spec.dropout == 0
        and not (quantized and spec.method != "full"),
    )


def predict_for_model(
    spec: RunSpec,
    config: dict,
    quantized: bool,
    weights_bytes: int | None = None,
    dtype_bytes: int | None = None,
    backend: str = "cpu",
) -> MemoryEstimate:
    """The prediction for a concrete spec. The engine calls it before the first step with the loaded model's
    exact frozen-weight size and compute dtype (dtype_bytes; None = what spec.dtype means on a CPU)."""
    kwargs = _model_kwargs(spec, config, quantized, weights_bytes, dtype_bytes, backend)
    shape, method, seq_len = kwargs.pop("shape"), kwargs.pop("method"), kwargs.pop("seq_len")
    return predict_peak_memory(shape, method, spec.batch_size, seq_len, **kwargs)


@dataclass(frozen=True)
class BatchChoice:
    """What `batch_size: auto` picked, and why (recorded in the run's start event and result)."""

    batch_size: int
    grad_accumulation: int
    budget_bytes: int
    budget_source: str  # "memory_budget_gb" | "device free memory"
    largest_fitting: int  # the largest micro-batch under the budget (before the effective-batch rounding)
    estimate: MemoryEstimate
    fits: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        e = self.batch_size * self.grad_accumulation
        fit = "" if self.fits else "; even micro-batch 1 is predicted over the budget"
        return (
            f"batch_size auto: micro-batch {self.batch_size} x accumulation {self.grad_accumulation} "
            f"(effective {e}); predicted peak {self.estimate.peak_bytes / 1e9:.2f} GB of "
            f"{self.budget_bytes / 1e9:.2f} GB ({self.budget_source}); largest fitting micro-batch "
            f"{self.largest_fitting}{fit}"
        )


def choose_batch(
    spec: RunSpec,
    config: dict,
    quantized: bool,
    weights_bytes: int | None,
    budget_bytes: int,
    budget_source: str,
    max_rows: int = 1024,
    dtype_bytes: int | None = None,
    backend: str = "cpu",
) -> BatchChoice:
    """The micro-batch for `batch_size: auto`: the largest whose predicted peak fits the budget, no larger
    than the split's rows per epoch (a bigger one only repeats rows). With an effective_batch_size it is
    rounded down to a divisor of it, so micro-batch x accumulation is exactly the effective batch (and a
    halving after an out-of-memory keeps it exact too)."""
    kwargs = _model_kwargs(spec, config, quantized, weights_bytes, dtype_bytes, backend)
    shape, method, seq_len = kwargs.pop("shape"), kwargs.pop("method"), kwargs.pop("seq_len")
    target = spec.effective_batch_size
    cap = max(1, min(max_rows, 1024, target or 1024))
    fit = fit_batch_size(shape, method, seq_len, budget_bytes, max_batch=cap, **kwargs)
    largest = fit.batch_size
    if target:
        batch = max(d for d in range(1, largest + 1) if target % d == 0)
        accumulation = target // batch
    else:
        batch, accumulation = largest, spec.grad_accumulation
    estimate = predict_peak_memory(shape, method, batch, seq_len, **kwargs)
    return BatchChoice(batch, accumulation, int(budget_bytes), budget_source, largest, estimate, fit.fits)
