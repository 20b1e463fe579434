"""What the gateway checks before a run is queued, beyond the spec's own rules, so a run that cannot start is
refused at submit rather than FAILED seconds later: the model dir's config.json, target_modules and
num_layers against its blocks, max_seq_length against the dataset's longest prompt, and the predicted peak
memory against the trainers that could take it (services/common/memory.py, as the engine predicts it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.memory import ModelShape, predict_for_model, spec_dtype_bytes
from services.common.model_config import read_model_config
from services.common.records import TrainerRecord
from services.common.spec import RunSpec
from services.gateway import catalog
from services.gateway.placement import GIB, MEMORY_KINDS, device_matches, memory_kind, total_memory

# Architectures whose blocks hold the projections memory.ModelShape names (mlx_lm's module paths); for
# others the trainer checks target_modules when it loads the model.
LLAMA_LAYOUT = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"}


def check_model_fit(spec: RunSpec, model: Path, field: str = "spec") -> dict[str, Any]:
    """The model's config.json (FailedPrecondition when broken); num_layers and target_modules within it."""
    config = read_model_config(model, f"{field}.model")
    blocks = config.get("num_hidden_layers")
    if isinstance(blocks, int) and spec.num_layers > blocks:
        raise InvalidArgument(
            f"{spec.num_layers} exceeds the {blocks} blocks of model {model.name!r}; -1 adapts all",
            f"{field}.num_layers",
        )
    if spec.method != "full" and config["model_type"] in LLAMA_LAYOUT:
        try:
            available = sorted(ModelShape.from_config(config).module_dims())
        except (KeyError, TypeError, ZeroDivisionError):
            return config  # an incomplete shape: the trainer names what is missing when it loads it
        unknown = [m for m in spec.target_modules if m not in available]
        if unknown:
            raise InvalidArgument(
                f"unknown module(s) {unknown}; the blocks of model {model.name!r} have {available}",
                f"{field}.target_modules",
            )
    return config


def check_prompts_fit(spec: RunSpec, model: Path, data: Path | str, field: str = "spec") -> None:
    """Refuse a max_seq_length that the dataset's longest prompt alone fills (the engine would fail on it:
    nothing left to learn). A lower bound of every row's prompt tokens refuses first (no tokenizer load);
    then the rows it ranks highest are counted as the engine counts them, with the chat template
    (catalog.exact_longest_prompt). Where they cannot be counted here, the bound alone decides, so nothing
    the engine accepts is refused."""
    if not isinstance(data, Path):  # a hub dataset: read by the trainer
        return
    columns = (spec.prompt_field, spec.completion_field, spec.messages_field, spec.system_field)
    try:
        found = catalog.longest_prompt(data, model, spec.mask_prompt, columns)
        if found and found.tokens <= spec.max_seq_length:
            found = catalog.exact_longest_prompt(data, model, spec.mask_prompt, columns)
    except (OSError, ValueError):  # an unreadable split: the trainer (and ValidateDataset) name it
        return
    if found and found.tokens > spec.max_seq_length:
        counted = (
            f"is {found.tokens} tokens with the chat template"
            if found.exact
            else (f"is at least {found.tokens} tokens")
        )
        raise InvalidArgument(
            f"the prompt of {data.name}/{found.file}:{found.line} {counted}, so max_seq_length="
            f"{spec.max_seq_length} leaves nothing to learn; raise max_seq_length (or mask_prompt=none)",
            f"{field}.max_seq_length",
        )


def _candidates(trainers: Iterable[TrainerRecord], placement: dict[str, Any]) -> list[TrainerRecord]:
    """The trainers that could take the run (strict placement narrows them), with a known memory size."""
    out = [t for t in trainers if not t.draining and total_memory(t) > 0]
    if placement.get("strict"):
        device, pinned = placement.get("device", ""), placement.get("trainer_id", "")
        out = [t for t in out if device_matches(t, device) and (not pinned or t.id == pinned)]
    return out


def predict_peaks(spec: RunSpec, config: dict[str, Any]) -> dict[str, int]:
    """The run's predicted peak bytes on one trainer, by memory kind ("cpu", "gpu": the compute dtype and the
    backend's coefficients differ): a data-parallel run's processes share one trainer, each with its share of
    the micro-batch. batch_size auto counts as its smallest micro-batch (1). {} when config.json lacks the
    shape (the trainer predicts from the loaded model)."""
    batch = spec.batch_size if spec.batch_size > 0 else 1
    workers = max(1, spec.workers)
    sized = spec.replace(batch_size=max(1, batch // workers))
    quantized = "quantization" in config
    try:
        return {
            kind: workers
            * predict_for_model(
                sized, config, quantized, None, spec_dtype_bytes(spec, kind == "gpu"), kind
            ).peak_bytes
            for kind in MEMORY_KINDS
        }
    except (KeyError, TypeError, ZeroDivisionError):
        return {}


def check_memory(
    spec: RunSpec,
    peaks: dict[str, int],
    trainers: Iterable[TrainerRecord],
    placement: dict[str, Any],
    field: str = "spec",
) -> None:
    """Refuse a run whose predicted peak memory (`peaks`, from predict_peaks) exceeds the memory of every
    trainer that could take it, unless spec.allow_over_memory. No trainer registered or no prediction: nothing
    to compare with (the placer and the trainer's own check stand)."""
    if spec.allow_over_memory or not peaks:
        return
    candidates = _candidates(trainers, placement)
    if not candidates:
        return
    best = None
    for trainer in candidates:
        predicted, memory = peaks[memory_kind(trainer)], total_memory(trainer)
        if predicted <= memory:
            return
        if best is None or memory - predicted > best[2] - best[1]:
            best = (trainer, predicted, memory)
    trainer, predicted, memory = best
    batch = spec.batch_size if spec.batch_size > 0 else 1
    knob = "batch_size" if batch > 1 else "max_seq_length"
    what = f"micro-batch {batch}{' (batch_size auto, at its smallest)' if spec.batch_size <= 0 else ''}"
    if spec.workers > 1:
        what += f" over {spec.workers} processes"
    raise FailedPrecondition(
        f"predicted peak memory {predicted / GIB:.1f} GiB ({what} x {spec.max_seq_length} tokens, "
        f"{spec.method}) exceeds the memory of every trainer that could take it: the largest, {trainer.id}, "
        f"has {memory / GIB:.1f} GiB; lower {knob}, enable grad_checkpoint, or set allow_over_memory to "
        "submit anyway",
        f"{field}.{knob}",
    )
