"""mlx_lm's LoRA and DoRA layers with a faster forward pass, the same parameters and the same function.

mlx_lm's `LoRALinear` computes `(x @ lora_a) @ lora_b` with float32 adapters, so a bf16 activation is promoted:
each adapted projection casts its whole (tokens x in) input to float32, runs the two thin matmuls and their
backward in float32, scales the (tokens x out) result and casts it back. Here the adapters stay float32 master
weights (AdamW updates them in float32) but are cast to the compute dtype where they are used, with the scale
folded into B (an r x out multiply instead of a tokens x out one): the adapter path runs in the activation's
dtype, and in float32 it is the same computation as mlx_lm's up to rounding.

The layers are installed by changing the class of mlx_lm's modules (`speed_up`), so parameter names, saved
adapters, `mlx_lm generate --adapter-path` and `mlx_lm fuse` are untouched.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear


def _adapter(module, x: mx.array) -> mx.array:
    dtype = x.dtype
    a = module.lora_a.astype(dtype)
    b = (module.scale * module.lora_b).astype(dtype)
    return (module.dropout(x) @ a) @ b


class FastLoRALinear(LoRALinear):
    def __call__(self, x):
        return self.linear(x) + _adapter(self, x)


class FastDoRALinear(DoRALinear):
    def __call__(self, x):
        dtype = x.dtype
        w = self._dequantized_weight()
        out = x @ w.T + _adapter(self, x)
        # The row norms of the adapted weight (no gradient, as in the DoRA paper and mlx_lm), in float32 from
        # a compute-dtype sum: mlx_lm forms the whole adapted weight in float32 first.
        b = (self.scale * self.lora_b).astype(w.dtype)
        adapted = w + b.T @ self.lora_a.T.astype(w.dtype)
        denom = mx.stop_gradient(mx.sqrt(mx.sum(mx.square(adapted.astype(mx.float32)), axis=1)))
        out = (self.m / denom).astype(dtype) * out
        if "bias" in self.linear:
            out = out + self.linear.bias
        return out


FAST = {LoRALinear: FastLoRALinear, DoRALinear: FastDoRALinear}


def speed_up(model: nn.Module) -> int:
    """Switch mlx_lm's adapter layers in `model` to the fast forward; returns how many were switched."""
    switched = 0
    for _, module in model.named_modules():
        fast = FAST.get(type(module))
        if fast is not None:
            module.__class__ = fast
            switched += 1
    return switched
