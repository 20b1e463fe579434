"""Where the time of our LoRA step goes: the engine's model and loss on one (B, L) batch of the synthetic
dataset, timed whole and in parts (forward, backward, the vocabulary head and loss, the blocks, attention, the
optimizer update, and the matmuls alone at the speed the BLAS reaches on their shapes), plus a few candidate
changes to the engine measured on the same batch. Run by bench/engine.py in its own process; writes JSON.

`python -m bench.engine_profile --config '{"data": DIR, "batch_size": 4, "seq_len": 256, ...}' --out p.json`
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_unflatten

from bench.engine_peers import best_of
from services.common.datasets.samples import BatchPlan, load_dataset
from services.common.spec import RunSpec
from services.trainer.engine.methods import (
    PackedMask,
    apply_method,
    load_base,
    loss_fn,
    packed_attention_mask,
)
from services.trainer.engine.training import build_optimizer, to_device


def timed(fn, reps: int) -> float:
    return best_of(lambda: mx.eval(fn()), reps)


def head_loss(model, h, targets, mask):
    """The vocabulary part of loss_fn: final norm, tied head (d -> vocab) and cross-entropy."""
    logits = model.model.embed_tokens.as_linear(model.model.norm(h))
    ce = nn.losses.cross_entropy(logits, targets) * mask
    return ce.sum() / mx.maximum(mask.sum(), 1)


def gemm_seconds(shapes: list[tuple[int, int, int, int]], reps: int) -> float:
    """Time of the listed (count, M, K, N) matmuls, each shape timed once at the speed the BLAS reaches on it."""
    total = 0.0
    for count, m, k, n in shapes:
        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)
        total += count * timed(lambda a=a, b=b: a @ b, reps)
    return total


def step_gemms(args, tokens: int, n_adapted: int) -> list[tuple[int, int, int, int]]:
    """(count, M, K, N) of the frozen-weight matmuls of one LoRA step: forward X W^T for every projection and
    the head, backward dX = dY W through every block that has adapters above its input (all of them with
    num_layers=-1) and through the head. LoRA never forms dW of a frozen weight."""
    d, ff, kv = args.hidden_size, args.intermediate_size, args.num_key_value_heads * args.head_dim
    n = args.num_hidden_layers
    proj = [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]  # (in, out) of q k v o gate up down
    out = []
    for din, dout in proj:
        out.append((n, tokens, din, dout))  # forward
        out.append((n_adapted, tokens, dout, din))  # backward dX
    out.append((1, tokens, d, args.vocab_size))  # head forward
    out.append((1, tokens, args.vocab_size, d))  # head backward dX
    return out


def elementwise(args, batch: int, length: int, reps: int) -> dict:
    """Per-element cost of the step's transcendental functions on MLX's CPU backend against numpy, and how
    many elements a step pushes through them: the softmax of the vocabulary head (B L V), SiLU's sigmoid in
    every MLP (B L ff per block) and attention's softmax (B H L^2 per block)."""
    n = 1 << 23
    x = mx.random.normal((n,))
    mx.eval(x)
    xn = np.array(x)
    per_element = {
        "mlx_exp": timed(lambda: mx.exp(x), reps) / n,
        "mlx_sigmoid": timed(lambda: mx.sigmoid(x), reps) / n,
        "mlx_multiply": timed(lambda: x * x, reps) / n,
        "numpy_exp": best_of(lambda: np.exp(xn), reps) / n,
    }
    blocks = args.num_hidden_layers
    counts = {
        "head_logits": batch * length * args.vocab_size,
        "mlp_sigmoid": blocks * batch * length * args.intermediate_size,
        "attention_scores": blocks * batch * args.num_attention_heads * length**2,
    }
    return {"elementwise_seconds_per_element": per_element, "transcendental_elements_per_pass": counts}


def profile(cfg: dict) -> dict:
    reps = cfg.get("reps", 3)
    spec = RunSpec.from_dict(
        {
            "data": cfg["data"],
            "method": "lora",
            "num_layers": cfg["num_layers"],
            "rank": cfg["rank"],
            "alpha": cfg["alpha"],
            "batch_size": cfg["batch_size"],
            "max_seq_length": cfg["seq_len"],
            "warmup_steps": 0,
            "iters": 10,
        }
    )
    mx.random.seed(0)
    prepared = load_base(spec)
    splits = load_dataset(Path(spec.data_path), prepared.tokenizer, spec.max_seq_length, spec.mask_prompt)
    apply_method(prepared, spec)
    model = prepared.model
    model.train()
    args = model.args
    batch = BatchPlan(splits["train"], spec.batch_size, spec.max_seq_length, True, spec.seed).batch(0, 0)
    inputs, targets, mask, segments = to_device(batch)
    tokens = batch.tokens
    out: dict = {"tokens": tokens, "batch_shape": list(batch.inputs.shape), "reps": reps}

    # ---- the whole step, as training.py builds it --------------------------------------------------------
    optimizer = build_optimizer(spec)
    optimizer.init(model.trainable_parameters())
    state = [model.state, optimizer.state, mx.random.state]
    value_and_grad = nn.value_and_grad(model, loss_fn)

    def step(*batch_arrays):
        (loss, ntoks), grads = value_and_grad(model, *batch_arrays)
        grads, norm = optim.clip_grad_norm(grads, spec.max_grad_norm)
        optimizer.update(model, grads)
        return loss, norm

    compiled_step = partial(mx.compile, inputs=state, outputs=state)(step)
    batch_arrays = (inputs, targets, mask, segments)
    out["step_compiled"] = best_of(lambda: mx.eval(state, compiled_step(*batch_arrays)), reps)
    out["step_uncompiled"] = best_of(lambda: mx.eval(state, step(*batch_arrays)), reps)
    if cfg.get("steps_only"):  # for A/B runs of the whole step under different process settings
        return out
    grad_only = mx.compile(lambda *b: value_and_grad(model, *b))
    out["forward_backward_compiled"] = timed(lambda: grad_only(*batch_arrays), reps)
    forward_only = mx.compile(lambda *b: loss_fn(model, *b))
    out["forward_compiled"] = timed(lambda: forward_only(*batch_arrays), reps)

    # ---- parts -----------------------------------------------------------------------------------------
    grads = grad_only(*batch_arrays)[1]
    mx.eval(grads)

    def update(g):
        g, norm = optim.clip_grad_norm(g, spec.max_grad_norm)
        optimizer.update(model, g)
        return norm

    update_compiled = partial(mx.compile, inputs=state, outputs=state)(update)
    out["update_compiled"] = best_of(lambda: mx.eval(state, update_compiled(grads)), reps)
    out["attention_mask"] = timed(lambda: packed_attention_mask(segments), reps)

    h = mx.random.normal((*inputs.shape, args.hidden_size)) * 0.1
    mx.eval(h)
    head_grad = mx.grad(lambda h: head_loss(model, h, targets, mask))
    out["head_forward"] = timed(lambda: head_loss(model, h, targets, mask), reps)
    out["head_forward_backward"] = timed(lambda: head_grad(h), reps)
    # Only the positions that carry loss through the head (the chat data learns ~1 token in 4).
    for share in (0.25, 0.5):
        keep = int(tokens * share)
        hk, tk, mk = h.reshape(-1, h.shape[-1])[:keep], targets.reshape(-1)[:keep], mask.reshape(-1)[:keep]
        grad_k = mx.grad(lambda hk, tk=tk, mk=mk: head_loss(model, hk, tk, mk))
        out[f"head_forward_backward_{int(share * 100)}pct_positions"] = timed(
            lambda g=grad_k, x=hk: g(x), reps
        )

    block = model.model.layers[-1]
    block_mask = packed_attention_mask(segments)
    cache = PackedMask(block_mask)

    def block_loss(params, x):
        block.update(params)
        return block(x, block_mask, cache).sum()

    block_grad = mx.grad(block_loss, argnums=(0, 1))
    params = block.trainable_parameters()
    out["block_forward"] = timed(lambda: block(h, block_mask, cache), reps)
    out["block_forward_backward"] = timed(lambda: block_grad(params, h), reps)
    # The same block with its adapters taken out (plain frozen Linear layers): what LoRA adds to a block.
    adapters = [
        (name, m) for name, m in block.named_modules() if hasattr(m, "linear") and hasattr(m, "lora_a")
    ]
    block.update_modules(tree_unflatten([(name, m.linear) for name, m in adapters]))
    block_frozen = mx.grad(lambda x: block(x, block_mask, cache).sum())
    out["block_forward_backward_no_adapters"] = timed(lambda: block_frozen(h), reps)
    block.update_modules(tree_unflatten(adapters))

    heads, kv_heads, hd = args.num_attention_heads, args.num_key_value_heads, args.head_dim
    b, length = inputs.shape
    q = mx.random.normal((b, heads, length, hd))
    k, v = (mx.random.normal((b, kv_heads, length, hd)) for _ in range(2))
    mx.eval(q, k, v)
    scale = hd**-0.5
    for name, m in (("packed_mask", block_mask), ("causal", "causal")):

        def attention(q, k, v, m=m):
            return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=m)

        attention_grad = mx.grad(lambda q, k, v, f=attention: f(q, k, v).sum(), argnums=(0, 1, 2))
        out[f"attention_forward_{name}"] = timed(lambda f=attention: f(q, k, v), reps)
        out[f"attention_forward_backward_{name}"] = timed(lambda g=attention_grad: g(q, k, v), reps)

    out.update(elementwise(args, b, length, reps))

    n_adapted = args.num_hidden_layers if spec.num_layers == -1 else spec.num_layers
    gemms = step_gemms(args, inputs.size, n_adapted)
    out["gemm_flops"] = sum(2 * c * m * k * n for c, m, k, n in gemms)
    out["gemm_seconds"] = gemm_seconds(gemms, reps)
    out["layers"] = args.num_hidden_layers
    out["adapted_layers"] = n_adapted
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON object of settings")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    Path(args.out).write_text(json.dumps(profile(json.loads(args.config)), indent=1))


if __name__ == "__main__":
    sys.exit(main())
