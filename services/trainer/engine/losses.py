"""Training objectives. A loss is `loss(model, inputs, targets, mask, segments, positions) -> (mean, tokens)`
over the arrays `training.to_device` makes of a batch; the loop takes one as a parameter (as mlx_lm's
`train(..., loss=...)` does), so a new objective is a new function here, not a fork of the loop.

`cross_entropy` is the default: the vocabulary head runs only at the positions that carry loss (`positions`,
chosen on the host), in chunks of at most CHUNK_ELEMENTS logits, each chunk's logits recomputed in the backward
pass (mx.checkpoint) instead of kept; the logits stay in the compute dtype and only one chunk at a time is cast
to float32 for the log-sum-exp. So the peak never holds tokens x vocab logits, let alone in float32.
`full_logits_cross_entropy` is the plain formula (the whole (B, L, V) logits in float32), kept as the
reference the tests compare against and as the path for models whose head we do not recognise.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

# Logits computed at once in the head (positions x vocab): bounds the head's share of the peak at about
# CHUNK_ELEMENTS x (compute-dtype logits + float32 copy + its gradient) bytes, ~1.3 GB.
CHUNK_ELEMENTS = 1 << 27
# Model types whose __call__ is `head(model.model(inputs, cache))` with a tied embedding or `lm_head`.
PLAIN_HEAD_MODELS = {"llama", "qwen2", "qwen3", "mistral"}


def forward_hidden(model: nn.Module, inputs: mx.array, segments: mx.array | None) -> mx.array:
    """The body's output (after the final norm) for (B, L) inputs; segments: packed rows' block mask."""
    from .methods import PackedMask, packed_attention_mask

    if segments is None:
        return model.model(inputs)
    mask = packed_attention_mask(segments)
    return model.model(inputs, cache=[PackedMask(mask) for _ in model.layers])


def head_module(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(module, method) that maps hidden states to logits, or None when the model is not of a known shape."""
    if getattr(model, "model_type", None) not in PLAIN_HEAD_MODELS or not hasattr(model, "model"):
        return None
    if getattr(model.args, "tie_word_embeddings", False):
        return model.model.embed_tokens, "as_linear"
    return model.lm_head, "__call__"


def chunk_positions(positions: int, vocab: int) -> int:
    """Positions per head chunk: a power of two, at least 128, with chunk x vocab <= CHUNK_ELEMENTS."""
    chunk = 128
    while chunk * 2 * vocab <= CHUNK_ELEMENTS and chunk < positions:
        chunk *= 2
    return chunk


def _chunk_loss(head: nn.Module, method: str, targets: mx.array, weights: mx.array):
    """Sum of weighted token losses of one chunk; params passed in so the checkpoint differentiates them,
    targets and weights closed over (a checkpoint asks for the VJP of every input, and indices have none)."""
    apply = getattr(head, method)

    def loss_sum(params, h):
        head.update(params)
        logits = apply(h).astype(mx.float32)
        ce = mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
        return (ce * weights).sum()

    return loss_sum


def cross_entropy(model, inputs, targets, mask, segments=None, positions=None):
    """Token-weighted mean cross-entropy, the head evaluated only at `positions` (flat indices into B x L)."""
    found = head_module(model)
    if found is None:
        return full_logits_cross_entropy(model, inputs, targets, mask, segments)
    head, method = found
    h = forward_hidden(model, inputs, segments)
    h = h.reshape(-1, h.shape[-1])
    flat_targets, weights = targets.reshape(-1), mask.reshape(-1)
    if positions is not None:
        h, flat_targets, weights = h[positions], flat_targets[positions], weights[positions]
    n = h.shape[0]
    vocab = model.args.vocab_size
    chunk = chunk_positions(n, vocab)
    params = head.trainable_parameters()
    if n <= chunk or params:
        # One chunk: keeping its logits for the backward costs no more than recomputing them would save. A
        # trainable head (full fine-tuning) too: each checkpointed chunk would add a whole vocab x hidden
        # weight gradient (on the H200, 1.5B full: 29.3k tok/s chunked vs 37.7k before, issue 10).
        total = _chunk_loss(head, method, flat_targets, weights)(params, h)
    else:
        total = mx.array(0.0, mx.float32)
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            piece = _chunk_loss(head, method, flat_targets[start:end], weights[start:end])
            total = total + mx.checkpoint(piece)(params, h[start:end])
    ntoks = mask.sum()
    return total / mx.maximum(ntoks, 1), ntoks


def full_logits_cross_entropy(model, inputs, targets, mask, segments=None, positions=None):
    """The reference: whole (B, L, V) logits, cast to float32, cross-entropy at every position, masked."""
    from .methods import forward

    logits = forward(model, inputs, segments)
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * mask
    ntoks = mask.sum()
    return ce.sum() / mx.maximum(ntoks, 1), ntoks
