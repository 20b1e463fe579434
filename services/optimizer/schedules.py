"""Default search spaces and learning-rate schedules per fine-tuning method.

The reasoning (also in README.md beside this file):
- Adapters (LoRA, DoRA, QLoRA) start with B = 0, so the update grows from nothing and AdamW's per-parameter
  step size is what moves it. Long fine-tunes of 7B-13B models use 1e-4..5e-4 (the QLoRA paper: 2e-4);
  short ones on small models want more: on the default 135M model and extraction task, 60 steps at scale
  alpha/rank = 2 reached 19.5% / 25.5% / 38% exact match at 2e-4 / 1e-3 / 2e-3 (README's sweep), so the
  default is 2e-3 (RunSpec's too), searched over [1e-5, 5e-3] in log space. DoRA and QLoRA (whose adapters
  are the same fp32 LoRA on a quantized base) share it: DoRA reached 44% and QLoRA 35% at 2e-3.
- Full fine-tuning moves every pretrained weight; the same per-parameter step as an adapter's would erase
  what pretraining learned. Its range is twenty times lower, [1e-6, 5e-4], default 1e-4 (21% against 15% at
  5e-5 in the same sweep).
- Warmup: AdamW's second-moment estimate is noisy for its first ~1 / (1 - beta2) steps, and large early
  steps taken on it are what make fine-tunes diverge (Liu et al., 2020; Ma & Yarats, 2021). A short linear
  warmup, 3% of the steps for adapters (their update starts at zero, so early steps are small anyway)
  and 6% for full fine-tuning, at least 1 and at most 200 steps, removes that failure at a negligible cost.
  The search space still lets warmup range from 0 to 10% of the steps, so a study can measure it.
- Decay: cosine from the peak to 10% of it (RunSpec's `min_lr_ratio`). Fine-tunes are short, and annealing
  the rate is what turns the last steps into a lower validation loss; ending at 10% rather than 0 keeps
  those steps useful.
- LoRA alpha is tied to the rank (alpha = 2 * rank, a scale of 2): the effective step on the update is
  lr * alpha / rank, so searching alpha next to the learning rate would only add a ridge for the optimizer
  to walk along.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument

from .space import Condition, Parameter, SearchSpace

METHODS = ("lora", "dora", "qlora", "full")
ADAPTER_METHODS = ("lora", "dora", "qlora")
ALPHA_PER_RANK = 2.0
MIN_LR_RATIO = 0.1
MAX_WARMUP_STEPS = 200


@dataclass(frozen=True)
class MethodSchedule:
    """The learning-rate schedule and search range suggested for one method."""

    method: str
    learning_rate: float  # default peak learning rate
    learning_rate_low: float
    learning_rate_high: float
    warmup_steps: int
    schedule: str  # "cosine"
    min_lr_ratio: float
    alpha_per_rank: float  # 0 for full fine-tuning (no adapter)
    reasoning: str


_RATES = {
    "lora": (2e-3, 1e-5, 5e-3, 0.03),
    "dora": (2e-3, 1e-5, 5e-3, 0.03),
    "qlora": (2e-3, 1e-5, 5e-3, 0.03),
    "full": (1e-4, 1e-6, 5e-4, 0.06),
}
_WHY = {
    "lora": "B starts at zero and AdamW sets the step: peak 2e-3 (best of a 60-step sweep on the default task), searched 1e-5..5e-3.",
    "dora": "as LoRA (44% exact match at 2e-3 in the same sweep): LoRA's rate and range.",
    "qlora": "the adapters are fp32 LoRA on a quantized base: LoRA's rate and range.",
    "full": "every pretrained weight moves: twenty times lower than adapters, 1e-4 in 1e-6..5e-4.",
}


def method_schedule(method: str, total_steps: int) -> MethodSchedule:
    if method not in _RATES:
        raise InvalidArgument(f"unknown method {method!r}; one of {', '.join(METHODS)}", field="methods")
    if total_steps < 1:
        raise InvalidArgument(f"must be >= 1, got {total_steps}", field="total_steps")
    lr, low, high, warm = _RATES[method]
    warmup = (
        min(MAX_WARMUP_STEPS, max(1, round(warm * total_steps)), total_steps - 1) if total_steps > 1 else 0
    )
    reasoning = (
        f"{_WHY[method]} Linear warmup over {round(100 * warm)}% of {total_steps} steps ({warmup}) while AdamW's "
        f"moment estimates settle, then cosine decay to {MIN_LR_RATIO:g} x peak so the last steps anneal."
    )
    return MethodSchedule(
        method,
        lr,
        low,
        high,
        warmup,
        "cosine",
        MIN_LR_RATIO,
        0.0 if method == "full" else ALPHA_PER_RANK,
        reasoning,
    )


def default_space(
    methods: Sequence[str] = METHODS, total_steps: int = 200
) -> tuple[SearchSpace, list[MethodSchedule]]:
    """A search space over RunSpec fields for the given methods, and each method's schedule.

    One method: its own learning-rate range. Several: a `method` categorical, and a learning rate over the
    union of their ranges (the GP learns the method x rate interaction through the one-hot features).
    Adapter-only parameters (rank, dropout) carry a condition on the method.
    """
    methods = list(dict.fromkeys(methods or METHODS))
    schedules = [method_schedule(m, total_steps) for m in methods]
    params: list[Parameter] = []
    if len(methods) > 1:
        params.append(Parameter.categorical("method", methods))
    low = min(s.learning_rate_low for s in schedules)
    high = max(s.learning_rate_high for s in schedules)
    params.append(Parameter.real("learning_rate", low, high, log=True))
    adapters = [m for m in methods if m in ADAPTER_METHODS]
    if adapters:
        condition = (
            Condition("method", tuple(adapters))
            if len(methods) > 1 and len(adapters) < len(methods)
            else None
        )
        params.append(Parameter.integer("rank", 2, 128, log=True, condition=condition))
        params.append(Parameter.real("dropout", 0.0, 0.2, condition=condition))
    params.append(
        Parameter.integer("warmup_steps", 0, max(0, min(MAX_WARMUP_STEPS, round(0.1 * total_steps))))
    )
    params.append(Parameter.real("weight_decay", 1e-4, 1e-1, log=True))
    return SearchSpace(tuple(params)), schedules
