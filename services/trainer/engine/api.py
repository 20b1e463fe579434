"""The engine's public API: what the CLI and the trainer service call. Everything here is synchronous and
runs in the calling process (the trainer service calls it inside a spawned child process)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import psutil
from mlx.utils import tree_flatten
from mlx_lm.generate import stream_generate
from mlx_lm.utils import load as mlx_load

from services.common.datasets.layouts import Columns
from services.common.datasets.samples import BatchPlan, load_dataset
from services.common.files import write_atomic
from services.common.memory import BatchChoice, choose_batch, predict_for_model
from services.common.spec import RunSpec

from . import checkpoint, distributed
from .artifacts import save_adapter
from .blas import coretype_warning
from .callbacks import TrainingCallback
from .errors import CheckpointError, OutOfMemory
from .eval_generation import EVAL_SAMPLES_FILE, EvalGeneration, truncate_eval_samples
from .evaluation import TEST_SAMPLES_FILE, loss_over, score_split
from .hardware import backend_label, detect_hardware
from .methods import apply_method, load_base, parameter_counts, write_json_atomic
from .metrics import MetricsLog, RunResult, perplexity, read_metrics
from .training import Loop, build_optimizer, evaluate_loss

log = logging.getLogger(__name__)

# Fields a resume may change without invalidating the loss curve so far.
RESUMABLE_CHANGES = {
    "iters",
    "eval_every",
    "save_every",
    "test_samples",
    "max_new_tokens",
    "val_batches",
    "report_to",
    "eval_samples",
    # The global batch is the same whatever the number of processes it is split over.
    "workers",
    "allow_over_memory",  # the gateway's submit check only
}
# A resume may also split each optimizer step differently (micro-batch x accumulation, product kept): what
# the out-of-memory recovery does. effective_batch_size and memory_budget_gb only steer that choice.
BATCH_FIELDS = {"batch_size", "grad_accumulation", "effective_batch_size", "memory_budget_gb"}
# Of the device's free memory, what batch_size auto plans to use when no memory_budget_gb is set: the model
# is within ~15% (see memory.py), and the rest of the machine goes on allocating meanwhile.
DEVICE_BUDGET_FRACTION = 0.85


def trainable_bytes(model) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.trainable_parameters()))


def _check_resume_compatible(saved: dict, spec: RunSpec) -> None:
    current = spec.to_dict()
    fixed = RESUMABLE_CHANGES | BATCH_FIELDS
    changed = sorted(k for k in current if k not in fixed and saved.get(k) != current[k])
    saved_rows = saved.get("batch_size", 0) * saved.get("grad_accumulation", 0)
    if saved_rows != spec.batch_size * spec.grad_accumulation:
        changed += ["batch_size x grad_accumulation"]
        current["batch_size x grad_accumulation"] = spec.batch_size * spec.grad_accumulation
        saved = {**saved, "batch_size x grad_accumulation": saved_rows}
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume with a different spec ({detail})")


def _rescale_position(progress: checkpoint.Progress, saved: dict, spec: RunSpec) -> None:
    """The data position counts micro-batches; with a smaller micro-batch the same rows lie further in. Rows
    are planned independently of the batch size when packing (the default), so the curve continues exactly;
    unpacked length buckets are regrouped by the new size."""
    old, new = saved["batch_size"], spec.batch_size
    if old != new:
        progress.batch_index = progress.batch_index * old // new


def device_budget() -> tuple[int, str]:
    """What this process may still use: free memory plus what MLX already holds (the loaded model)."""
    free = detect_hardware().available_memory_bytes + mx.get_active_memory()
    return int(free * DEVICE_BUDGET_FRACTION), "device free memory"


def resolve_batch(spec: RunSpec, choice: BatchChoice) -> RunSpec:
    return spec.replace(batch_size=choice.batch_size, grad_accumulation=choice.grad_accumulation)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: they will be produced again, identically."""
    kept = [r for r in read_metrics(path) if r.get("kind") in ("step", "eval") and r["step"] <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def train(
    spec: RunSpec,
    run_dir: Path,
    *,
    resume: bool = False,
    callback: TrainingCallback | None = None,
    initial_eval: bool = True,
) -> RunResult:
    """Train per `spec`, writing checkpoints, metrics.jsonl and the adapter under `run_dir`.

    resume=True continues from the newest checkpoint in run_dir (its spec must match `spec`, except
    for RESUMABLE_CHANGES and a different split of the same rows per step into micro-batches).
    initial_eval=False skips the step-0 validation (the CLI's --no-baseline). Raises SpecError / DatasetError / ModelError / CheckpointError / OutOfMemory
    for bad input, TrainingDiverged when the loss becomes NaN.

    spec.workers > 1: this process is one rank of a data-parallel run launched as distributed.py says; rank 0
    writes everything under run_dir and reports through `callback`, the other ranks only train.
    """
    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    spec.validate()
    world = distributed.join(spec.workers)
    lead = world is None or world.lead
    callback = (callback or TrainingCallback()) if lead else TrainingCallback()
    found = checkpoint.latest(run_dir) if run_dir.exists() else None
    if resume and found is None:
        raise CheckpointError(f"nothing to resume in {run_dir}: no complete checkpoint")
    if not resume and found is not None:
        raise CheckpointError(
            f"{run_dir} already holds a run (checkpoint {found.name}); resume it or use a new dir"
        )

    mx.random.seed(spec.seed)
    mx.reset_peak_memory()
    prepared = load_base(spec)
    splits = load_dataset(
        spec.data_path, prepared.tokenizer, spec.max_seq_length, spec.mask_prompt, Columns.of(spec)
    )
    apply_method(prepared, spec)
    model = prepared.model
    trainable, total = parameter_counts(model)
    frozen_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters())) - trainable_bytes(model)
    dtype_bytes = prepared.compute_dtype.size
    device = "gpu" if mx.default_device() == mx.gpu else "cpu"
    saved_spec = checkpoint.saved_spec(found) if resume else None
    batch_auto = spec.auto_batch
    choice: BatchChoice | None = None
    if batch_auto and saved_spec is not None:
        # A resumed auto run keeps the micro-batch it trained with (or that a recovery gave it).
        spec = spec.replace(
            batch_size=saved_spec["batch_size"], grad_accumulation=saved_spec["grad_accumulation"]
        )
    elif batch_auto:
        if spec.memory_budget_gb:
            budget, source = int(spec.memory_budget_gb * 1e9), "memory_budget_gb"
        else:
            budget, source = device_budget()
        rows = BatchPlan(splits["train"], 1, spec.max_seq_length, spec.packing, spec.seed).batches_per_epoch()
        choice = choose_batch(
            spec, prepared.config, prepared.quantized, frozen_bytes, budget, source, rows, dtype_bytes, device
        )
        spec = resolve_batch(spec, choice)
        log.info("%s", choice.describe())
    predicted = predict_for_model(
        spec.replace(batch_size=spec.batch_size // spec.workers, workers=1),  # one rank's share
        prepared.config,
        prepared.quantized,
        frozen_bytes,
        dtype_bytes,
        device,
    )
    if spec.memory_budget_gb and predicted.peak_bytes > spec.memory_budget_gb * 1e9:
        raise OutOfMemory(
            f"predicted peak memory {predicted.peak_bytes / 1e9:.2f} GB exceeds memory_budget_gb="
            f"{spec.memory_budget_gb}; lower batch_size or max_seq_length, or enable grad_checkpoint"
        )

    optimizer = build_optimizer(spec)
    optimizer.init(model.trainable_parameters())
    progress = checkpoint.Progress()
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        progress, saved_spec = checkpoint.load(found, model, optimizer)
        _check_resume_compatible(saved_spec, spec)
        _rescale_position(progress, saved_spec, spec)
        if lead:
            _truncate_metrics(metrics_path, progress.step)
            truncate_eval_samples(run_dir / EVAL_SAMPLES_FILE, progress.step)
        callback.on_log(f"resuming from {found.name} (step {progress.step})")
    elif lead:  # a previous attempt that never checkpointed: start its logs over
        metrics_path.unlink(missing_ok=True)
        (run_dir / EVAL_SAMPLES_FILE).unlink(missing_ok=True)
    if lead:
        write_json_atomic(run_dir / "spec.json", spec.to_dict())

    backend = backend_label()
    log.info("run %s: %s on %s, backend %s", run_dir.name, spec.method, prepared.base_path, backend)
    if backend.startswith("cpu") and (slow := coretype_warning()):
        log.warning("%s", slow)
        callback.on_log(slow)
    if world is not None:
        backend = f"{backend} x{world.size} ({os.environ.get(distributed.BACKEND_ENV)})"
    if spec.eval_samples and lead:
        callback = EvalGeneration(callback, model, prepared.tokenizer, splits["valid"], spec, run_dir)
    callback.on_start(
        {
            "spec": spec.to_dict(),
            "base_model": prepared.base_path,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "predicted_peak_memory_bytes": predicted.peak_bytes,
            "memory_breakdown": predicted.to_dict(),
            "backend": backend,
            "resumed_from_step": progress.step,
            "batch_size": spec.batch_size,
            "grad_accumulation": spec.grad_accumulation,
            "batch_auto": batch_auto,
            "workers": spec.workers,
            "batch_choice": choice.to_dict() if choice else None,
            "train_samples": len(splits["train"].samples),
            "truncated_samples": {k: s.truncated for k, s in splits.items()},
        }
    )
    if choice is not None:
        callback.on_log(choice.describe())
    for name, split in splits.items():
        if split.truncated:
            callback.on_log(f"{split.truncated} {name} samples longer than max_seq_length were truncated")

    # The other ranks log nothing (the loop writes only on the lead); they still hold a log to close.
    metrics = MetricsLog(metrics_path if lead else Path(os.devnull))
    try:
        loop = Loop(
            spec,
            model,
            optimizer,
            splits["train"],
            splits["valid"],
            run_dir,
            progress,
            callback,
            metrics,
            initial_eval=initial_eval,
            world=world,
        )
        outcome = loop.run()
        final_eval = loop.evaluate() if outcome.progress.step != 0 and lead else None
    finally:
        metrics.close()

    adapter_bytes = save_adapter(run_dir, model, spec, prepared) if lead else 0
    test_loss = test_task = None
    test_samples = test_tokens = 0
    if "test" in splits and outcome.status != "cancelled" and lead:
        # Capped like a validation pass (val_batches), so a large test split does not outlast training.
        test_plan = BatchPlan(splits["test"], spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        measured = loss_over(
            model,
            test_plan,
            spec.val_batches,
            lambda d, t: callback.on_progress("test_loss", d, t, "batches"),
        )
        test_loss, test_tokens, test_samples = measured.loss, measured.tokens, measured.samples
        test_task = score_split(
            model,
            prepared.tokenizer,
            splits["test"],
            Path(spec.data_path),
            spec.test_samples,
            spec.max_new_tokens,
            progress=lambda d, t: callback.on_progress("test_scoring", d, t, "samples"),
            samples_path=run_dir / TEST_SAMPLES_FILE,
        )

    p = outcome.progress
    valid_loss = final_eval.valid_loss if final_eval else float("nan")
    result = RunResult(
        status=outcome.status,
        steps=p.step,
        final_train_loss=outcome.last_train_loss,
        final_valid_loss=valid_loss,
        best_valid_loss=p.best_valid_loss,
        valid_perplexity=perplexity(valid_loss),
        test_loss=test_loss if test_loss is not None else float("nan"),
        test_perplexity=perplexity(test_loss) if test_loss is not None else float("nan"),
        task=test_task,
        train_tokens=p.tokens,
        tokens_per_second=p.tokens / p.train_seconds if p.train_seconds else 0.0,
        wall_seconds=time.perf_counter() - wall_start,
        train_seconds=p.train_seconds,
        peak_memory_bytes=mx.get_peak_memory(),
        peak_rss_bytes=max(outcome.peak_rss, psutil.Process().memory_info().rss),
        predicted_peak_memory_bytes=predicted.peak_bytes,
        trainable_parameters=trainable,
        total_parameters=total,
        adapter_bytes=adapter_bytes,
        run_dir=str(run_dir),
        backend=backend,
        test_loss_samples=test_samples,
        test_loss_tokens=test_tokens,
        batch_size=spec.batch_size,
        grad_accumulation=spec.grad_accumulation,
        batch_auto=batch_auto,
    )
    if lead:
        write_json_atomic(run_dir / "result.json", result.to_dict())
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(result.to_dict()) + "\n")
    callback.on_end(result)
    return result


def evaluate_run(run_dir: Path, split: str = "test", max_batches: int = -1, task_samples: int = 0) -> dict:
    """Loss, perplexity (and task score when task_samples > 0) of a finished run's adapter on a split."""
    from .artifacts import base_model_of

    run_dir = Path(run_dir)
    spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    model, tokenizer = mlx_load(base_model_of(run_dir), adapter_path=str(run_dir))
    splits = load_dataset(spec.data_path, tokenizer, spec.max_seq_length, spec.mask_prompt, Columns.of(spec))
    if split not in splits:
        raise CheckpointError(f"the run's dataset has no {split} split")
    plan = BatchPlan(splits[split], spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
    loss, tokens = evaluate_loss(model, plan, max_batches)
    out = {"split": split, "loss": loss, "perplexity": perplexity(loss), "tokens": tokens}
    task = score_split(
        model, tokenizer, splits[split], Path(spec.data_path), task_samples, spec.max_new_tokens
    )
    if task is not None:
        out["task"] = task
    return out


def generate_stream(
    model: str,
    prompt: str,
    *,
    adapter_dir: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
) -> Iterator[str]:
    """Yield generated text pieces for a chat prompt, from the base model or with a run's adapter."""
    from mlx_lm.sample_utils import make_sampler

    lm, tokenizer = mlx_load(model, adapter_path=adapter_dir)
    messages = [{"role": "user", "content": prompt}]
    tokens = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    for response in stream_generate(
        lm, tokenizer, list(tokens), max_tokens=max_tokens, sampler=make_sampler(temp=temperature)
    ):
        if response.text:
            yield response.text


def score_base_model(spec: RunSpec, callback: TrainingCallback | None = None):
    """The task score of the untouched base model on the test split: the 'before' of a fine-tuning run."""
    callback = callback or TrainingCallback()
    prepared = load_base(spec)
    splits = load_dataset(
        spec.data_path, prepared.tokenizer, spec.max_seq_length, spec.mask_prompt, Columns.of(spec)
    )
    if "test" not in splits:
        return None
    return score_split(
        prepared.model,
        prepared.tokenizer,
        splits["test"],
        Path(spec.data_path),
        spec.test_samples,
        spec.max_new_tokens,
        progress=lambda d, t: callback.on_progress("baseline_scoring", d, t, "samples"),
    )
