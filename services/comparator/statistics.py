"""The numbers behind a report: means with 95% confidence intervals across seeds, paired tests between arms
(across seeds, and McNemar's on per-sample outcomes) with Holm's correction, and the Pareto front of quality
vs time vs memory. Pure functions of numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _stats

ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single value
    ci95: float  # half-width of the 95% Student-t interval of the mean; nan for a single value


def summarize(values: Sequence[float]) -> Summary:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Summary(1, mean, 0.0, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Summary(n, mean, std, float(_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n))


@dataclass(frozen=True)
class PairedTest:
    a: str
    b: str
    metric: str
    n: int  # pairs used
    mean_difference: float  # mean of a - b
    statistic: float
    p_value: float
    effect_size: float  # Cohen's d_z: mean difference / sd of the differences
    p_adjusted: float = math.nan
    significant: bool = False
    test: str = "paired-t"
    a_only: int = 0  # McNemar: pairs only a got right
    b_only: int = 0  # McNemar: pairs only b got right


def paired_t(a: str, xs: Sequence[float], b: str, ys: Sequence[float], metric: str) -> PairedTest | None:
    """Paired t-test of two arms over the seeds both have a value for (pairs share a seed: same data order,
    same init). None with fewer than 2 pairs. Identical differences (sd 0) give p = 0 if they are not all
    zero, else p = 1: the t statistic is then infinite or undefined, the conclusion is not."""
    pairs = [
        (float(x), float(y))
        for x, y in zip(xs, ys)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    n = len(pairs)
    if n < 2:
        return None
    diffs = [x - y for x, y in pairs]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        d = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        result = _stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
        t, p, d = float(result.statistic), float(result.pvalue), mean / sd
    return PairedTest(a, b, metric, n, mean, t, p, d)


def mcnemar_exact(
    a: str, xs: Sequence[bool], b: str, ys: Sequence[bool], metric: str = "task.exact_match"
) -> PairedTest | None:
    """McNemar's exact test on paired binary outcomes (the same sample answered by two arms): only the
    discordant pairs carry information, and under "no difference" each is a's or b's with probability 1/2,
    so p is the two-sided binomial test of a_only out of a_only + b_only. None without pairs.

    statistic = a_only; mean_difference = (a_only - b_only) / pairs, the difference in exact match;
    effect_size = (a_only - b_only) / discordant pairs, in [-1, 1] (0 with none)."""
    n = min(len(xs), len(ys))
    if n == 0:
        return None
    a_only = sum(1 for x, y in zip(xs, ys) if x and not y)
    b_only = sum(1 for x, y in zip(xs, ys) if y and not x)
    discordant = a_only + b_only
    p = float(_stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    return PairedTest(
        a,
        b,
        metric,
        n,
        (a_only - b_only) / n,
        float(a_only),
        p,
        (a_only - b_only) / discordant if discordant else 0.0,
        test="mcnemar-exact",
        a_only=a_only,
        b_only=b_only,
    )


def holm(tests: list[PairedTest], alpha: float = ALPHA) -> list[PairedTest]:
    """Holm-Bonferroni adjusted p-values (family = the tests given), in the input order."""
    order = sorted(range(len(tests)), key=lambda i: tests[i].p_value)
    adjusted = [1.0] * len(tests)
    running = 0.0
    m = len(tests)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * tests[i].p_value))
        adjusted[i] = running
    return [
        PairedTest(**{**t.__dict__, "p_adjusted": adjusted[i], "significant": adjusted[i] < alpha})
        for i, t in enumerate(tests)
    ]


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points no other point dominates (all coordinates minimized; a point with a non-finite
    coordinate is never on the front)."""
    finite = [all(math.isfinite(c) for c in p) for p in points]

    def dominates(p: Sequence[float], q: Sequence[float]) -> bool:
        return all(a <= b for a, b in zip(p, q)) and any(a < b for a, b in zip(p, q))

    return [
        finite[i]
        and not any(finite[j] and dominates(points[j], points[i]) for j in range(len(points)) if j != i)
        for i in range(len(points))
    ]
