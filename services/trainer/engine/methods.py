"""Loading a base model and preparing it for one fine-tuning method (lora, dora, qlora, full).

LoRA and DoRA are mlx_lm's own layers (module replacement via `linear_to_lora_layers`), so the saved adapters
are exactly what `mlx_lm generate --adapter-path` and `mlx_lm fuse` expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import get_total_parameters
from mlx_lm.utils import load as mlx_load

from services.common.files import write_atomic
from services.common.paths import DEFAULT_QUANTIZED_MODEL_NAME, default_model
from services.common.spec import RunSpec

from .adapters import speed_up
from .errors import ModelError, SpecError
from .losses import cross_entropy
from .recompute import recompute_mlp_tails


@dataclass
class PreparedModel:
    model: nn.Module
    tokenizer: Any
    config: dict
    base_path: str  # the model dir the adapters belong on (recorded in adapter_config.json)
    compute_dtype: mx.Dtype
    quantized: bool


def resolve_model_path(spec: RunSpec) -> str:
    """qlora on the default model uses the GGUF's own 4-bit tensors rather than re-quantizing."""
    if not spec.model and spec.method == "qlora" and spec.quant_bits == 4:
        candidate = default_model().parent / DEFAULT_QUANTIZED_MODEL_NAME
        if candidate.exists():
            return str(candidate)
    return spec.model_path


def compute_dtype(spec: RunSpec) -> mx.Dtype:
    if spec.dtype != "auto":
        return getattr(mx, spec.dtype)
    # MLX has no fast bf16 or quantized kernels on the CPU: float32 there, bf16 on Metal/CUDA.
    return mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16


def load_base(spec: RunSpec) -> PreparedModel:
    path = resolve_model_path(spec)
    local = Path(path)
    if (local.is_absolute() or path.startswith(".")) and not local.exists():
        raise ModelError(f"model directory not found: {path}")
    if local.exists() and not (local / "config.json").exists():
        raise ModelError(f"{path} is not an mlx_lm model dir (no config.json)")
    try:
        model, tokenizer, config = mlx_load(path, return_config=True)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from None
    quantized = "quantization" in config
    if spec.method == "full" and quantized:
        raise SpecError("method", f"full fine-tuning needs an unquantized model; {path} is quantized")
    if spec.method == "qlora" and not quantized:
        # Quantize the linear layers (not the embedding/head, which QLoRA keeps in higher precision here).
        nn.quantize(
            model,
            group_size=spec.quant_group_size,
            bits=spec.quant_bits,
            class_predicate=lambda p, m: (
                isinstance(m, nn.Linear) and m.weight.shape[-1] % spec.quant_group_size == 0
            ),
        )
        quantized = True
    # LoRA/DoRA on an already-quantized dir is QLoRA in all but name; allowed, as mlx_lm does.
    dtype = compute_dtype(spec)
    cast_floating(model, dtype)
    return PreparedModel(model, tokenizer, config, path, dtype, quantized)


def cast_floating(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast float weights (not quantized integer tensors, not their scales) to the compute dtype."""

    def cast(x: mx.array) -> mx.array:
        return x.astype(dtype) if mx.issubdtype(x.dtype, mx.floating) and x.dtype != dtype else x

    params = tree_map(cast, model.parameters())
    model.update(params)


def block_module_names(model: nn.Module) -> list[str]:
    names = []
    for name, module in model.layers[0].named_modules():
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            names.append(name)
    return sorted(names)


def lora_parameters(spec: RunSpec) -> dict:
    return {
        "rank": spec.rank,
        "scale": spec.lora_scale,
        "dropout": spec.dropout,
        "keys": list(spec.target_modules),
    }


def apply_method(prepared: PreparedModel, spec: RunSpec) -> None:
    model = prepared.model
    n_blocks = len(model.layers)
    if spec.num_layers > n_blocks:
        raise SpecError("num_layers", f"{spec.num_layers} exceeds the model's {n_blocks} blocks")
    model.freeze()
    if spec.method == "full":
        model.unfreeze()
        recompute_mlp_tails(model)
        return
    available = block_module_names(model)
    unknown = [k for k in spec.target_modules if k not in available]
    if unknown:
        raise SpecError(
            "target_modules", f"unknown module(s) {unknown}; this model's blocks have {available}"
        )
    num_layers = n_blocks if spec.num_layers == -1 else spec.num_layers
    # Adapter parameters stay float32 whatever the base's compute dtype (they are tiny; precision matters).
    linear_to_lora_layers(model, num_layers, lora_parameters(spec), use_dora=spec.method == "dora")
    speed_up(model)
    recompute_mlp_tails(model)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; mlx_lm's total counts a quantized weight by its unpacked elements."""
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    return trainable, get_total_parameters(model)


def adapter_config(spec: RunSpec, prepared: PreparedModel) -> dict:
    n_blocks = len(prepared.model.layers)
    return {
        "model": str(Path(prepared.base_path).resolve())
        if Path(prepared.base_path).exists()
        else prepared.base_path,
        "fine_tune_type": {"qlora": "lora"}.get(spec.method, spec.method),
        "num_layers": n_blocks if spec.num_layers == -1 else spec.num_layers,
        "lora_parameters": lora_parameters(spec),
        "peftlab_method": spec.method,
        "peftlab_spec": spec.to_dict(),
    }


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2))


# ---- forward pass with packed rows ------------------------------------------------------------------


class PackedMask:
    """Quacks like an mlx_lm KV cache for one forward pass so the model uses our block-diagonal causal mask.

    mlx_lm models build their attention mask from the first layer's cache (`cache.make_mask`) and call
    `update_and_fetch` on each layer's cache; passing this through keeps samples packed into one row from
    attending to each other. RoPE is relative, so position offsets inside a row need no reset.
    """

    offset = 0

    def __init__(self, mask: mx.array):
        self.mask = mask

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        return self.mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values


def packed_attention_mask(segments: mx.array) -> mx.array:
    """(B, L) segment ids -> (B, 1, L, L) boolean mask: causal, and only within the same segment."""
    length = segments.shape[1]
    causal = mx.tril(mx.ones((length, length), dtype=mx.bool_))
    same = segments[:, None, :, None] == segments[:, None, None, :]
    return mx.logical_and(same, causal)


def forward(model: nn.Module, inputs: mx.array, segments: mx.array | None) -> mx.array:
    if segments is None:
        return model(inputs)
    mask = packed_attention_mask(segments)
    return model(inputs, cache=[PackedMask(mask) for _ in model.layers])


# The default objective (losses.cross_entropy); the name evaluation and the tests import.
loss_fn = cross_entropy
