"""The training loop: AdamW with warmup + cosine/linear decay, gradient accumulation and clipping, optional
gradient checkpointing, a compiled step, periodic evaluation with early stopping, checkpoints, metrics.

The loop is pluggable as mlx_lm's `train(..., loss=, iterate_batches=, training_callback=)` is: the objective
(`loss`, see losses.py) and the batch source (`iterate_batches`) are parameters of `Loop`, the callback reports.
Batches reach the compiled step in few shapes (`to_device`'s length and loss-position buckets), so a new padded
length does not retrace it after the first steps."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import psutil
from mlx.utils import tree_map

from services.common.datasets.samples import Batch, BatchPlan, Split
from services.common.spec import RunSpec

from . import checkpoint
from .callbacks import TrainingCallback
from .distributed import CANCEL, EARLY_STOP, GO, World
from .errors import RunSuperseded, TrainingDiverged
from .evaluation import loss_over
from .losses import cross_entropy
from .metrics import EvalMetrics, MetricsLog, StepMetrics, perplexity

log = logging.getLogger(__name__)


def learning_rate_schedule(spec: RunSpec):
    """Linear warmup from 0 to the peak, then cosine/linear decay to min_lr_ratio x peak at the last step."""
    peak, floor = spec.learning_rate, spec.learning_rate * spec.min_lr_ratio
    decay_steps = max(1, spec.iters - spec.warmup_steps)
    if spec.schedule == "cosine":
        decay = optim.cosine_decay(peak, decay_steps, floor)
    elif spec.schedule == "linear":
        decay = optim.linear_schedule(peak, floor, decay_steps)
    else:
        decay = lambda step: mx.array(peak, mx.float32)  # noqa: E731
    if spec.warmup_steps == 0:
        return decay
    warmup = optim.linear_schedule(0.0, peak, spec.warmup_steps)
    return optim.join_schedules([warmup, decay], [spec.warmup_steps])


def build_optimizer(spec: RunSpec) -> optim.Optimizer:
    # bias_correction=True: mlx defaults to False, PyTorch's AdamW (and PEFT recipes' learning rates) assume it.
    return optim.AdamW(
        learning_rate=learning_rate_schedule(spec),
        weight_decay=spec.weight_decay,
        bias_correction=True,
    )


def enable_grad_checkpoint(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass. Patched per block class once, switched on per
    instance, so other models in the same process are unaffected (mlx_lm's version patches for everyone)."""
    block_type = type(model.layers[0])
    if not getattr(block_type, "_peftlab_checkpointable", False):
        original = block_type.__call__

        def call(self, x, *args, **kwargs):
            if not getattr(self, "_peftlab_checkpoint", False):
                return original(self, x, *args, **kwargs)

            def inner(params, x):
                self.update(params)
                return original(self, x, *args, **kwargs)

            return mx.checkpoint(inner)(self.trainable_parameters(), x)

        block_type.__call__ = call
        block_type._peftlab_checkpointable = True
    for layer in model.layers:
        layer._peftlab_checkpoint = True


def bucket(n: int, limit: int, parts: int = 4) -> int:
    """n rounded up to the next of `parts` evenly spaced sizes up to `limit` (each a multiple of 32)."""
    step = max(32, 32 * -(-limit // (parts * 32)))
    return min(limit, step * -(-n // step))


def loss_positions(mask: np.ndarray) -> np.ndarray | None:
    """Flat indices of the positions the head must see: every loss position, padded with positions that carry
    no loss up to a bucketed count (few shapes for the compiled step); None when that is every position."""
    flat = mask.reshape(-1)
    learned = np.flatnonzero(flat > 0)
    k = bucket(len(learned), flat.size)
    if k >= flat.size:
        return None
    rest = np.flatnonzero(flat <= 0)[: k - len(learned)]
    return np.concatenate([learned, rest]).astype(np.int32)


def to_device(batch: Batch, max_length: int | None = None) -> tuple:
    """The arrays a loss takes: (inputs, targets, mask, segments, positions).

    max_length: pad the batch's length up to a bucket of it (training; see `bucket`). segments is None when no
    row holds more than one sample: the model then uses its causal mask (padding sits after the sample and
    carries no loss), which the fused attention runs much faster than an explicit (B, 1, L, L) mask."""
    inputs, targets, mask, segments = batch.inputs, batch.targets, batch.loss_mask, batch.segments
    if max_length is not None:
        pad = bucket(inputs.shape[1], max_length) - inputs.shape[1]
        if pad > 0:
            widths = ((0, 0), (0, pad))
            inputs, targets, mask = (np.pad(a, widths) for a in (inputs, targets, mask))
            segments = np.pad(segments, widths) if segments is not None else None
    if segments is not None and segments.max(initial=0) <= 1:
        segments = None
    positions = loss_positions(mask)
    return (
        mx.array(inputs),
        mx.array(targets),
        mx.array(mask),
        mx.array(segments) if segments is not None else None,
        mx.array(positions) if positions is not None else None,
    )


def plan_batches(plan: BatchPlan, progress: checkpoint.Progress) -> Iterator[Batch]:
    """The default batch source: the plan's batches in order, epoch after epoch, from where `progress` is
    (so a resume continues with the batch it stopped before); advances progress.epoch / batch_index."""
    per_epoch = plan.batches_per_epoch()
    while True:
        if progress.batch_index >= per_epoch:
            progress.epoch, progress.batch_index = progress.epoch + 1, 0
        batch = plan.batch(progress.epoch, progress.batch_index)
        progress.batch_index += 1
        yield batch


def reduce_gradients(grads, world: World | None = None):
    """Where a data-parallel run averages the gradients across workers (mlx's average_gradients, in
    all_reduce_size chunks); one process: unchanged."""
    if world is None:
        return grads
    return nn.average_gradients(grads, group=world.group)


def shard_batch(batch: Batch, world: World | None) -> Batch:
    """This rank's rows of the global batch (rows rank::size, as mlx_lm shards)."""
    if world is None:
        return batch
    segments = world.shard(batch.segments) if batch.segments is not None else None
    return Batch(
        world.shard(batch.inputs), world.shard(batch.targets), world.shard(batch.loss_mask), segments
    )


def evaluate_loss(
    model: nn.Module, plan: BatchPlan, max_batches: int = -1, loss: Callable = cross_entropy
) -> tuple[float, int]:
    """Token-weighted mean loss over (up to max_batches of) a split, in order."""
    was_training = model.training
    model.eval()
    total, ntoks = mx.array(0.0), mx.array(0.0)
    for batch in plan.epoch_batches(shuffle=False, limit=max_batches):
        value, n = loss(model, *to_device(batch))
        total, ntoks = total + value * n, ntoks + n
        mx.eval(total, ntoks)
    if was_training:
        model.train()
    n = int(ntoks.item())
    return (total.item() / n if n else float("nan")), n


@dataclass
class LoopOutcome:
    status: str  # succeeded | early_stopped | cancelled
    progress: checkpoint.Progress
    last_train_loss: float
    peak_rss: int


class Loop:
    def __init__(
        self,
        spec: RunSpec,
        model: nn.Module,
        optimizer: optim.Optimizer,
        train: Split,
        valid: Split,
        run_dir: Path,
        progress: checkpoint.Progress,
        callback: TrainingCallback,
        metrics: MetricsLog,
        initial_eval: bool = True,
        loss: Callable = cross_entropy,
        iterate_batches: Callable[[BatchPlan, checkpoint.Progress], Iterator[Batch]] = plan_batches,
        world: World | None = None,
    ):
        self.spec = spec
        # Data parallel: every rank steps through the same global batches; rank 0 (the lead) alone evaluates,
        # saves, logs and reports, and its decisions (cancel, early stop) reach the others through `agree`.
        self.world = world
        self.lead = world is None or world.lead
        self.initial_eval = initial_eval
        self.loss = loss
        self.model = model
        self.optimizer = optimizer
        self.run_dir = run_dir
        self.progress = progress
        self.callback = callback
        self.metrics = metrics
        self.train_plan = BatchPlan(train, spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        self.valid_plan = BatchPlan(valid, spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        self._batches = iterate_batches(self.train_plan, progress)
        self._process = psutil.Process()
        if spec.grad_checkpoint:
            enable_grad_checkpoint(model)
        self._build_steps()

    def _build_steps(self) -> None:
        spec, model, optimizer = self.spec, self.model, self.optimizer
        value_and_grad = nn.value_and_grad(model, self.loss)
        # The compiled functions read and write these trees; they must be the live objects (so any checkpoint
        # is loaded before this point).
        state = [model.state, optimizer.state, mx.random.state]

        def clip(grads):
            if spec.max_grad_norm > 0:
                return optim.clip_grad_norm(grads, spec.max_grad_norm)
            return grads, optim.clip_grad_norm(grads, float("inf"))[1]

        world = self.world

        def grad_step(*batch):
            (loss, ntoks), grads = value_and_grad(model, *batch)
            if world is not None:
                # Each rank's mean gradient weighted by its share of the batch's loss tokens (times size, which
                # the average divides out): the average is then the whole batch's token-weighted gradient.
                total = mx.distributed.all_sum(ntoks, group=world.group)
                weight = ntoks * world.size / mx.maximum(total, 1)
                grads = tree_map(lambda g: (g * weight).astype(g.dtype), grads)
                loss = mx.distributed.all_sum(loss * ntoks, group=world.group) / mx.maximum(total, 1)
                ntoks = total
            return loss, ntoks, grads

        def update_step(grads):
            grads, norm = clip(grads)
            optimizer.update(model, grads)
            return norm

        def full_step(*batch):
            loss, ntoks, grads = grad_step(*batch)
            return loss, ntoks, update_step(reduce_gradients(grads, world))

        if spec.compile:
            grad_step = partial(mx.compile, inputs=state, outputs=state)(grad_step)
            update_step = partial(mx.compile, inputs=state, outputs=state)(update_step)
            full_step = partial(mx.compile, inputs=state, outputs=state)(full_step)
        self._grad_step, self._update_step, self._full_step = grad_step, update_step, full_step
        self._state = state

    def _next_batch(self) -> tuple[Batch, tuple]:
        """The global batch (what the metrics count) and this rank's share of it on the device."""
        batch = next(self._batches)
        return batch, to_device(shard_batch(batch, self.world), self.spec.max_seq_length)

    def _train_step(self) -> tuple[float, int, int, float]:
        """One optimizer step over grad_accumulation micro-batches: (loss, loss tokens, tokens, grad norm)."""
        accumulation = self.spec.grad_accumulation
        if accumulation == 1:
            batch, arrays = self._next_batch()
            loss, ntoks, norm = self._full_step(*arrays)
            mx.eval(self._state, loss, ntoks, norm)
            return loss.item(), batch.loss_tokens, batch.tokens, norm.item()
        grads, losses, tokens, loss_tokens = None, [], 0, 0
        for _ in range(accumulation):
            batch, arrays = self._next_batch()
            loss, ntoks, g = self._grad_step(*arrays)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            losses.append((loss.item(), batch.loss_tokens))
            tokens += batch.tokens
            loss_tokens += batch.loss_tokens
        grads = tree_map(lambda g: g / accumulation, grads)
        norm = self._update_step(reduce_gradients(grads, self.world))
        mx.eval(self._state, norm)
        mean = sum(loss * n for loss, n in losses) / max(1, loss_tokens)
        return mean, loss_tokens, tokens, norm.item()

    def evaluate(self) -> EvalMetrics:
        tic = time.perf_counter()
        report = lambda done, total: self.callback.on_progress("valid", done, total, "batches")  # noqa: E731
        # The loop's own objective: a pluggable loss is judged (and early-stopped) by itself.
        loss = loss_over(self.model, self.valid_plan, self.spec.val_batches, report, self.loss).loss
        p = self.progress
        p.last_valid_loss = loss
        if loss < p.best_valid_loss - self.spec.early_stopping_min_delta:
            p.best_valid_loss, p.evals_without_improvement = loss, 0
        else:
            p.evals_without_improvement += 1
        record = EvalMetrics(p.step, loss, perplexity(loss), time.perf_counter() - tic, p.best_valid_loss)
        self.metrics.write(record)
        self.callback.on_eval(record)
        return record

    def save(self) -> None:
        if not self.lead or self.callback.superseded():
            return
        path = checkpoint.save(self.run_dir, self.model, self.optimizer, self.progress, self.spec.to_dict())
        self.callback.on_checkpoint(self.progress.step, str(path))

    def run(self) -> LoopOutcome:
        spec, p = self.spec, self.progress
        self.model.train()
        status, last_loss, peak_rss, saved_at = "succeeded", float("nan"), 0, -1
        started = time.perf_counter() - p.train_seconds
        if p.step == 0 and spec.eval_every and self.initial_eval and self.lead:
            self.evaluate()  # the starting point of the valid-loss curve
        pending = GO  # the lead's decision, taken by every rank at the top of the next step
        while p.step < spec.iters:
            if self.lead and pending == GO and self.callback.should_stop():
                pending = CANCEL
            decision = self.world.agree(pending) if self.world is not None else pending
            if decision == CANCEL:
                status = "cancelled"
                break
            if decision == EARLY_STOP:
                status = "early_stopped"
                break
            tic = time.perf_counter()
            loss, loss_tokens, tokens, norm = self._train_step()
            # The rate this update used: the optimizer evaluates its schedule at the old step, before counting.
            lr = self.optimizer.learning_rate.item()
            seconds = time.perf_counter() - tic
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged at step {p.step + 1}: loss is {loss} (lower learning_rate, now {spec.learning_rate})"
                )
            p.step += 1
            p.tokens += tokens
            p.loss_tokens += loss_tokens
            p.train_seconds += seconds
            last_loss = loss
            rss = self._process.memory_info().rss
            peak_rss = max(peak_rss, rss)
            record = StepMetrics(
                step=p.step,
                total_steps=spec.iters,
                train_loss=loss,
                learning_rate=lr,
                tokens=loss_tokens,
                tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
                step_seconds=seconds,
                elapsed_seconds=time.perf_counter() - started,
                peak_memory_bytes=mx.get_peak_memory(),
                rss_bytes=rss,
                grad_norm=norm,
            )
            if not self.lead:
                continue
            self.metrics.write(record)
            self.callback.on_step(record)
            if self.callback.superseded():
                raise RunSuperseded(f"the run was taken over by another attempt at step {p.step}; stopping")
            if spec.eval_every and p.step % spec.eval_every == 0 and p.step < spec.iters:
                self.evaluate()
                if (
                    spec.early_stopping_patience
                    and p.evals_without_improvement >= spec.early_stopping_patience
                ):
                    self.callback.on_log(
                        f"early stop at step {p.step}: valid loss did not improve for "
                        f"{p.evals_without_improvement} evals (best {p.best_valid_loss:.4f})"
                    )
                    pending = EARLY_STOP
                    continue
            if spec.save_every and p.step % spec.save_every == 0 and p.step < spec.iters:
                self.save()
                saved_at = p.step
        if saved_at != p.step:
            self.save()
        return LoopOutcome(status, p, last_loss, peak_rss)
