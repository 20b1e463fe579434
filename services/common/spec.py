"""RunSpec: everything that defines a training run, validated once at the boundary.

A spec plus its seed fully determines a run (same spec + seed => same loss curve on CPU). It is what the
CLI reads from YAML, what the trainer service receives over gRPC, and what a checkpoint stores to check a
resume is compatible.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import SpecError
from .paths import default_data, default_model

METHODS = ("lora", "dora", "qlora", "full")
SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRACKERS = ("tensorboard", "mlflow", "wandb")
# Which tokens of a sample carry the loss (services/common/datasets/samples.py applies it).
MASK_MODES = ("assistant", "last_assistant", "none")
MAX_WORKERS = 64  # data-parallel processes of one run
AUTO_BATCH = 0  # batch_size "auto": the engine picks the micro-batch from the memory model
# Llama-family names; mlx_lm's models use the same module paths inside each transformer block.
# Peak learning rates when a spec does not set one. Adapters (scale alpha/rank = 2) learn the default
# extraction task fastest near 2e-3 within 60-120 steps (sweep in README); full fine-tuning moves every
# weight and needs ~20x less.
DEFAULT_LEARNING_RATES = {"lora": 2e-3, "dora": 2e-3, "qlora": 2e-3, "full": 1e-4}
DEFAULT_TARGET_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RunSpec:
    model: str = field(
        default="", metadata=_help("Model dir (mlx_lm format) or hub name; empty = default model.")
    )
    data: str = field(default="", metadata=_help("Dir with train/valid/test.jsonl; empty = default dataset."))
    method: str = field(default="lora", metadata=_help("lora | dora | qlora | full."))
    quant_bits: int = field(default=4, metadata=_help("qlora only: base weights quantized to 4 or 8 bits."))
    quant_group_size: int = field(
        default=32, metadata=_help("qlora only: quantization group size (32, 64, 128).")
    )
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata=_help("Module paths inside each block to adapt (lora/dora/qlora)."),
    )
    num_layers: int = field(default=-1, metadata=_help("Adapt the last N blocks; -1 = all blocks."))
    rank: int = field(default=8, metadata=_help("LoRA rank r (1..1024)."))
    alpha: float = field(default=16.0, metadata=_help("LoRA alpha; the update is scaled by alpha / rank."))
    dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA input, in [0, 1)."))
    learning_rate: float = field(
        default=2e-3,
        metadata=_help("Peak AdamW learning rate; unset = the method's default (DEFAULT_LEARNING_RATES)."),
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW decoupled weight decay."))
    schedule: str = field(default="cosine", metadata=_help("cosine | linear | constant decay after warmup."))
    warmup_steps: int = field(
        default=6,
        metadata=_help("Linear warmup from 0 over this many optimizer steps; unset = 10% of iters."),
    )
    min_lr_ratio: float = field(default=0.1, metadata=_help("Final learning rate as a fraction of the peak."))
    iters: int = field(
        default=60, metadata=_help("Optimizer steps to train for (default: a few CPU minutes).")
    )
    batch_size: int = field(
        default=4,
        metadata=_help(
            "Rows per micro-batch (a row packs several samples); auto (or 0) = the largest that fits "
            "memory_budget_gb (default: the device's free memory), accumulating to effective_batch_size."
        ),
    )
    grad_accumulation: int = field(default=1, metadata=_help("Micro-batches per optimizer step."))
    max_grad_norm: float = field(
        default=1.0, metadata=_help("Clip the global gradient norm; 0 = no clipping.")
    )
    max_seq_length: int = field(default=256, metadata=_help("Tokens per row; longer samples are truncated."))
    packing: bool = field(default=True, metadata=_help("Pack several samples per row instead of padding."))
    mask_prompt: str = field(
        default="assistant",
        metadata=_help(
            "Loss on: assistant (every assistant turn / the completion) | last_assistant (the final answer "
            "only) | none (every token, prompts too). true/false are accepted as assistant/none."
        ),
    )
    grad_checkpoint: bool = field(
        default=False, metadata=_help("Recompute activations in backward to save memory.")
    )
    compile: bool = field(default=True, metadata=_help("mx.compile the training step."))
    dtype: str = field(
        default="auto", metadata=_help("Base weights' compute dtype; auto = float32 on CPU, bf16 on GPU.")
    )
    eval_every: int = field(
        default=50, metadata=_help("Validate every N steps (and at the end); 0 = only at the end.")
    )
    val_batches: int = field(
        default=8, metadata=_help("Validation micro-batches per eval; -1 = whole split.")
    )
    early_stopping_patience: int = field(
        default=0, metadata=_help("Stop after N evals without improvement of valid loss; 0 = off.")
    )
    early_stopping_min_delta: float = field(
        default=0.0, metadata=_help("Improvement smaller than this counts as none.")
    )
    save_every: int = field(
        default=50, metadata=_help("Checkpoint every N steps (and at the end); 0 = only at the end.")
    )
    seed: int = field(default=0, metadata=_help("Seeds data order, adapter init and dropout."))
    test_samples: int = field(
        default=50, metadata=_help("Test samples scored by generation at the end (task metric); 0 = skip.")
    )
    max_new_tokens: int = field(default=160, metadata=_help("Generation limit when scoring the test split."))
    memory_budget_gb: float = field(
        default=0.0, metadata=_help("Refuse to start if the predicted peak exceeds this; 0 = no check.")
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata=_help("Experiment trackers fed from the run's events: tensorboard, mlflow, wandb."),
    )
    prompt_field: str = field(default="", metadata=_help("Dataset column of the prompt; '' = 'prompt'."))
    completion_field: str = field(
        default="", metadata=_help("Dataset column of the completion; '' = 'completion'.")
    )
    messages_field: str = field(
        default="", metadata=_help("Dataset column of the chat messages; '' = 'messages'.")
    )
    system_field: str = field(
        default="", metadata=_help("Dataset column of a system prompt prepended to each chat; '' = none.")
    )
    eval_samples: int = field(
        default=0,
        metadata=_help("Valid samples scored by greedy generation at every eval (exact match); 0 = off."),
    )
    effective_batch_size: int = field(
        default=0,
        metadata=_help(
            "batch_size auto: rows per optimizer step to keep (micro-batch x grad_accumulation); 0 = none."
        ),
    )
    allow_over_memory: bool = field(
        default=False,
        metadata=_help(
            "Submit even when the predicted peak memory exceeds every trainer's memory (the gateway refuses "
            "it otherwise); the run may then run out of memory."
        ),
    )

    workers: int = field(
        default=1,
        metadata=_help(
            "Data-parallel processes: each takes batch_size / workers rows of every micro-batch, gradients "
            "averaged with mx.distributed; batch_size a multiple of it; books that many trainer slots."
        ),
    )

    # The fields the submitter set (from_dict's keys); None = every field (a spec built directly).
    _given: ClassVar[tuple[str, ...] | None] = None

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        """Build and validate a spec; unknown keys are errors (with a suggestion), not silently dropped."""
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise SpecError(key, f"unknown field{hint}")
        given = list(values)
        values = dict(values)
        if "warmup_steps" not in values:
            # max(0, ...): a negative iters must be reported as iters, not as a derived warmup of -1.
            values["warmup_steps"] = max(0, _coerce(cls, "iters", values.get("iters", cls.iters)) // 10)
        if "learning_rate" not in values:
            values["learning_rate"] = DEFAULT_LEARNING_RATES.get(
                str(values.get("method", "lora")), cls.learning_rate
            )
        spec = cls(**{k: _coerce(cls, k, v) for k, v in values.items()})
        spec.validate()
        spec._given = tuple(given)
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunSpec:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SpecError("config", f"cannot read {path}: {exc.strerror}") from None
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise SpecError("config", f"{path}{where}: invalid YAML") from None
        if not isinstance(values, dict):
            raise SpecError("config", f"{path}: expected a mapping of field: value")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> RunSpec:
        """Every field as it is now, with `changes`."""
        return RunSpec.from_dict({**self.to_dict(), **changes})

    def overlay(self, overrides: Mapping[str, Any]) -> RunSpec:
        """The fields this spec was given, then `overrides`; fields neither sets take their defaults afresh
        (an arm that overrides the method gets that method's default learning rate)."""
        return RunSpec.from_dict({**self.given(), **overrides})

    def at(self, model: str, data: str) -> RunSpec:
        """This spec with its model and data as resolved on one machine; the rules do not look at paths, so
        it is not checked again."""
        out = dataclasses.replace(self, model=model, data=data)
        if self._given is not None:
            out._given = tuple(dict.fromkeys((*self._given, "model", "data")))
        return out

    def given(self) -> dict[str, Any]:
        """The fields the submitter set (the rest default): what a run's record keeps and a message carries."""
        if self._given is None:
            return self.to_dict()
        values = {name: getattr(self, name) for name in self._given}
        return {k: list(v) if isinstance(v, list) else v for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    # ---- derived values -----------------------------------------------------------------------------

    @property
    def model_path(self) -> str:
        return self.model or str(default_model())

    @property
    def data_path(self) -> str:
        return self.data or str(default_data())

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank

    @property
    def auto_batch(self) -> bool:
        return self.batch_size == AUTO_BATCH

    @property
    def uses_adapters(self) -> bool:
        return self.method != "full"

    # ---- validation ---------------------------------------------------------------------------------

    def validate(self) -> None:
        _one_of("method", self.method, METHODS)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("mask_prompt", self.mask_prompt, MASK_MODES)
        if self.method == "qlora":
            _one_of("quant_bits", self.quant_bits, (4, 8))
            _one_of("quant_group_size", self.quant_group_size, (32, 64, 128))
        _int_range("rank", self.rank, 1, 1024)
        _positive("alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.num_layers == 0 or self.num_layers < -1:
            raise SpecError("num_layers", f"must be -1 (all) or a positive count, got {self.num_layers}")
        if self.uses_adapters and not self.target_modules:
            raise SpecError("target_modules", "must name at least one module for lora/dora/qlora")
        _positive("learning_rate", self.learning_rate)
        if self.learning_rate > 1.0:
            raise SpecError("learning_rate", f"{self.learning_rate} is far above any sane value (<= 1)")
        _non_negative("weight_decay", self.weight_decay)
        _int_range("warmup_steps", self.warmup_steps, 0, 10**7)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise SpecError("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _int_range("iters", self.iters, 1, 10**7)
        if self.warmup_steps >= self.iters and self.warmup_steps > 0:
            raise SpecError("warmup_steps", f"{self.warmup_steps} must be smaller than iters ({self.iters})")
        _int_range("batch_size", self.batch_size, 0, 4096)
        _int_range("effective_batch_size", self.effective_batch_size, 0, 65536)
        _int_range("grad_accumulation", self.grad_accumulation, 1, 1024)
        _non_negative("max_grad_norm", self.max_grad_norm)
        _int_range("max_seq_length", self.max_seq_length, 16, 131072)
        _int_range("eval_every", self.eval_every, 0, 10**7)
        if self.val_batches == 0 or self.val_batches < -1:
            raise SpecError("val_batches", f"must be -1 (whole split) or positive, got {self.val_batches}")
        _int_range("early_stopping_patience", self.early_stopping_patience, 0, 10**6)
        _non_negative("early_stopping_min_delta", self.early_stopping_min_delta)
        _int_range("save_every", self.save_every, 0, 10**7)
        _int_range("seed", self.seed, 0, 2**31 - 1)
        _int_range("test_samples", self.test_samples, 0, 10**6)
        _int_range("max_new_tokens", self.max_new_tokens, 1, 32768)
        _non_negative("memory_budget_gb", self.memory_budget_gb)
        for tracker in self.report_to:
            _one_of("report_to", tracker, TRACKERS)
        _int_range("eval_samples", self.eval_samples, 0, 10**4)
        _int_range("workers", self.workers, 1, MAX_WORKERS)
        if self.workers > 1 and self.auto_batch:
            raise SpecError(
                "batch_size",
                f"auto is not supported with workers={self.workers}; set batch_size to a multiple of workers",
            )
        if self.batch_size % self.workers:
            raise SpecError(
                "batch_size",
                f"{self.batch_size} rows do not split over workers={self.workers}; use a multiple of {self.workers}",
            )


def _coerce(cls: type, name: str, value: Any) -> Any:
    """YAML and protobuf give us loosely typed values; convert to the field's type or say which field is wrong."""
    default = RunSpec.__dataclass_fields__[name]
    kind = type(default.default) if default.default is not dataclasses.MISSING else list
    if name == "batch_size" and isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO_BATCH
    if name == "mask_prompt" and (isinstance(value, bool) or str(value).lower() in ("true", "false")):
        return "assistant" if str(value).lower() == "true" else "none"  # the field was a bool once
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            out = float(value)
            if math.isnan(out) or math.isinf(out):
                raise ValueError
            return out
        if kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return list(value)
        return str(value)
    except (TypeError, ValueError):
        raise SpecError(name, f"expected {kind.__name__}, got {value!r}") from None


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise SpecError(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _int_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SpecError(name, f"must be between {low} and {high}, got {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise SpecError(name, f"must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise SpecError(name, f"must be >= 0, got {value}")
