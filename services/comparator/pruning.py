"""Early stopping of unpromising study trials from their validation-loss curves (pure: curves in, a verdict
out). A curve is the trial's evaluations so far, [(step, valid loss), ...]; the evaluation at step 0 (the
untrained model, the same for every trial of a study) never decides anything.

- median (Optuna's MedianPruner): at its newest evaluation step s, a trial whose best loss up to s is worse
  than the median of the finished trials' best loss up to s is stopped.
- halving (asynchronous successive halving, reduction factor 3): at rungs r0 x 3^k, with r0 = min_steps or
  the trial's first evaluation step, a trial goes on only while it is among the best third of every trial
  that reached the rung (running, finished or pruned).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

RULES = ("median", "halving")
REDUCTION = 3
DEFAULT_WARMUP_TRIALS = 5

Curve = Sequence[Sequence[float]]  # [(step, valid loss), ...], ascending steps


@dataclass(frozen=True)
class PruningRule:
    enabled: bool = False
    min_steps: int = 0
    warmup_trials: int = DEFAULT_WARMUP_TRIALS
    rule: str = "median"


@dataclass(frozen=True)
class Verdict:
    prune: bool
    step: int = 0  # the step the decision was made at
    value: float = math.nan  # the trial's best loss up to that step
    reason: str = ""


def best_up_to(curve: Curve, step: float) -> float | None:
    values = [float(v) for s, v in curve if 0 < s <= step and math.isfinite(v)]
    return min(values) if values else None


def judge(
    rule: PruningRule, curve: Curve, finished: Sequence[Curve], others: Sequence[Curve] = ()
) -> Verdict:
    """Should a running trial with `curve` stop? `finished` are the curves of complete trials (median rule
    and warm-up count); `others` every other trial's curve (halving)."""
    steps = [int(s) for s, _ in curve if s > 0]
    if not rule.enabled or not steps or len(finished) < rule.warmup_trials:
        return Verdict(False)
    step = steps[-1]
    if step < rule.min_steps:
        return Verdict(False)
    mine = best_up_to(curve, step)
    if mine is None:
        return Verdict(False)
    if rule.rule == "halving":
        return _halving(rule, curve, steps, [*finished, *others])
    peers = [v for v in (best_up_to(c, step) for c in finished) if v is not None]
    if len(peers) < rule.warmup_trials:
        return Verdict(False)
    median = statistics.median(peers)
    if mine > median:
        return Verdict(
            True,
            step,
            mine,
            f"best valid loss {mine:.4f} at step {step} is worse than the median {median:.4f} of "
            f"{len(peers)} finished trials",
        )
    return Verdict(False, step, mine)


def _halving(rule: PruningRule, curve: Curve, steps: list[int], peers: Sequence[Curve]) -> Verdict:
    base = max(1, rule.min_steps or steps[0])
    rung = base
    while rung * REDUCTION <= steps[-1]:
        rung *= REDUCTION
    for r in _rungs(base, rung):
        mine = best_up_to(curve, r)
        if mine is None:
            continue
        reached = [best_up_to(c, r) for c in peers if any(s >= r for s, _ in c)]
        values = sorted([v for v in reached if v is not None] + [mine])
        keep = max(1, math.ceil(len(values) / REDUCTION))
        if len(values) >= REDUCTION and mine > values[keep - 1]:
            return Verdict(
                True,
                r,
                mine,
                f"best valid loss {mine:.4f} at rung step {r} is not in the best {keep} of the "
                f"{len(values)} trials that reached it",
            )
    return Verdict(False, steps[-1], best_up_to(curve, steps[-1]) or math.nan)


def _rungs(base: int, top: int) -> list[int]:
    out, r = [], base
    while r <= top:
        out.append(r)
        r *= REDUCTION
    return out
