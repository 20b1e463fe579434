"""The training loop: AdamW with warmup + cosine/linear decay, gradient accumulation and clipping, optional
gradient checkpointing, a compiled step, periodic evaluation with early stopping, checkpoints, metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import psutil
from mlx.utils import tree_map

from services.common.spec import RunSpec

from . import checkpoint
from .callbacks import TrainingCallback
from .datasets import Batch, BatchPlan, Split
from .errors import TrainingDiverged
from .evaluation import loss_over
from .methods import loss_fn
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


def to_device(batch: Batch) -> tuple[mx.array, ...]:
    segments = mx.array(batch.segments) if batch.segments is not None else None
    return mx.array(batch.inputs), mx.array(batch.targets), mx.array(batch.loss_mask), segments


def evaluate_loss(model: nn.Module, plan: BatchPlan, max_batches: int = -1) -> tuple[float, int]:
    """Token-weighted mean loss over (up to max_batches of) a split, in order."""
    was_training = model.training
    model.eval()
    total, ntoks = mx.array(0.0), mx.array(0.0)
    for batch in plan.epoch_batches(shuffle=False, limit=max_batches):
        loss, n = loss_fn(model, *to_device(batch))
        total, ntoks = total + loss * n, ntoks + n
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
    saved_at_end: bool


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
    ):
        self.spec = spec
        self.initial_eval = initial_eval
        self.model = model
        self.optimizer = optimizer
        self.run_dir = run_dir
        self.progress = progress
        self.callback = callback
        self.metrics = metrics
        self.train_plan = BatchPlan(train, spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        self.valid_plan = BatchPlan(valid, spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        self.batches_per_epoch = self.train_plan.batches_per_epoch()
        self._process = psutil.Process()
        self._schedule = learning_rate_schedule(spec)
        self._build_steps()

    def _build_steps(self) -> None:
        spec, model, optimizer = self.spec, self.model, self.optimizer
        value_and_grad = nn.value_and_grad(model, loss_fn)
        # The compiled functions read and write these trees; they must be the live objects (so any checkpoint
        # is loaded before this point).
        state = [model.state, optimizer.state, mx.random.state]

        def clip(grads):
            if spec.max_grad_norm > 0:
                return optim.clip_grad_norm(grads, spec.max_grad_norm)
            return grads, optim.clip_grad_norm(grads, float("inf"))[1]

        def grad_step(inputs, targets, mask, segments):
            (loss, ntoks), grads = value_and_grad(model, inputs, targets, mask, segments)
            return loss, ntoks, grads

        def update_step(grads):
            grads, norm = clip(grads)
            optimizer.update(model, grads)
            return norm

        def full_step(inputs, targets, mask, segments):
            loss, ntoks, grads = grad_step(inputs, targets, mask, segments)
            return loss, ntoks, update_step(grads)

        if spec.compile:
            grad_step = partial(mx.compile, inputs=state, outputs=state)(grad_step)
            update_step = partial(mx.compile, inputs=state, outputs=state)(update_step)
            full_step = partial(mx.compile, inputs=state, outputs=state)(full_step)
        self._grad_step, self._update_step, self._full_step = grad_step, update_step, full_step
        self._state = state

    def _next_batch(self) -> Batch:
        p = self.progress
        if p.batch_index >= self.batches_per_epoch:
            p.epoch, p.batch_index = p.epoch + 1, 0
        batch = self.train_plan.batch(p.epoch, p.batch_index)
        p.batch_index += 1
        return batch

    def _train_step(self) -> tuple[float, int, int, float]:
        """One optimizer step over grad_accumulation micro-batches: (loss, loss tokens, tokens, grad norm)."""
        accumulation = self.spec.grad_accumulation
        if accumulation == 1:
            batch = self._next_batch()
            loss, ntoks, norm = self._full_step(*to_device(batch))
            mx.eval(self._state, loss, ntoks, norm)
            return loss.item(), batch.loss_tokens, batch.tokens, norm.item()
        grads, losses, tokens, loss_tokens = None, [], 0, 0
        for _ in range(accumulation):
            batch = self._next_batch()
            loss, ntoks, g = self._grad_step(*to_device(batch))
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            losses.append((loss.item(), batch.loss_tokens))
            tokens += batch.tokens
            loss_tokens += batch.loss_tokens
        grads = tree_map(lambda g: g / accumulation, grads)
        norm = self._update_step(grads)
        mx.eval(self._state, norm)
        mean = sum(loss * n for loss, n in losses) / max(1, loss_tokens)
        return mean, loss_tokens, tokens, norm.item()

    def evaluate(self) -> EvalMetrics:
        tic = time.perf_counter()
        report = lambda done, total: self.callback.on_progress("valid", done, total, "batches")  # noqa: E731
        loss = loss_over(self.model, self.valid_plan, self.spec.val_batches, report).loss
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
        path = checkpoint.save(self.run_dir, self.model, self.optimizer, self.progress, self.spec.to_dict())
        self.callback.on_checkpoint(self.progress.step, str(path))

    def run(self) -> LoopOutcome:
        spec, p = self.spec, self.progress
        self.model.train()
        status, last_loss, peak_rss, saved_at = "succeeded", float("nan"), 0, -1
        started = time.perf_counter() - p.train_seconds
        if p.step == 0 and spec.eval_every and self.initial_eval:
            self.evaluate()  # the starting point of the valid-loss curve
        while p.step < spec.iters:
            if self.callback.should_stop():
                status = "cancelled"
                break
            tic = time.perf_counter()
            lr = float(self._schedule(p.step))  # the rate this update uses (mlx evaluates it at the old step)
            loss, loss_tokens, tokens, norm = self._train_step()
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
            self.metrics.write(record)
            self.callback.on_step(record)
            if spec.eval_every and p.step % spec.eval_every == 0 and p.step < spec.iters:
                self.evaluate()
                if (
                    spec.early_stopping_patience
                    and p.evals_without_improvement >= spec.early_stopping_patience
                ):
                    status = "early_stopped"
                    self.callback.on_log(
                        f"early stop at step {p.step}: valid loss did not improve for "
                        f"{p.evals_without_improvement} evals (best {p.best_valid_loss:.4f})"
                    )
                    break
            if spec.save_every and p.step % spec.save_every == 0 and p.step < spec.iters:
                self.save()
                saved_at = p.step
        if saved_at != p.step:
            self.save()
        return LoopOutcome(status, p, last_loss, peak_rss, True)
