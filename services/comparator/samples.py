"""Per-sample test outcomes in a comparison: which test samples each arm gets right (from each run's
TaskScore.sample_exact), and McNemar's exact test between arms on those outcomes. Runs of two arms are
paired when they share a seed (same data order and initialization), samples by their index in the test
split; the (seed, sample) pairs of all shared seeds form one test per pair of arms, Holm-corrected over the
pairs of arms."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from .statistics import PairedTest, holm, mcnemar_exact

# Samples listed one by one in report.md (the rest are counted; report.json and GetReport have them all).
LISTED = 40


@dataclass
class SampleOutcomes:
    label: str
    run_id: str
    seed: int
    exact: list[bool] = field(default_factory=list)


def outcomes(rows_in_order: Sequence[str], runs: Sequence) -> list[SampleOutcomes]:
    """The runs (RunData) with per-sample outcomes, in row order then seed order."""
    order = {label: i for i, label in enumerate(rows_in_order)}
    found = [
        SampleOutcomes(r.label, r.run_id, r.seed, list(r.sample_exact))
        for r in runs
        if r.sample_exact and r.label in order
    ]
    return sorted(found, key=lambda o: (order[o.label], o.seed))


def mcnemar_tests(rows_in_order: Sequence[str], samples: Sequence[SampleOutcomes]) -> list[PairedTest]:
    by_label: dict[str, dict[int, list[bool]]] = {}
    for o in samples:
        by_label.setdefault(o.label, {})[o.seed] = o.exact
    family = []
    for a, b in itertools.combinations([label for label in rows_in_order if label in by_label], 2):
        xs: list[bool] = []
        ys: list[bool] = []
        for seed in sorted(set(by_label[a]) & set(by_label[b])):
            n = min(len(by_label[a][seed]), len(by_label[b][seed]))
            xs += by_label[a][seed][:n]
            ys += by_label[b][seed][:n]
        test = mcnemar_exact(a, xs, b, ys)
        if test is not None:
            family.append(test)
    return holm(family)


def right_per_sample(samples: Sequence[SampleOutcomes]) -> dict[str, list[tuple[int, int]]]:
    """label -> per sample index (seeds that got it right, seeds that answered it)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for o in samples:
        counts = out.setdefault(o.label, [])
        counts.extend([(0, 0)] * (len(o.exact) - len(counts)))
        for i, hit in enumerate(o.exact):
            right, seen = counts[i]
            counts[i] = (right + int(hit), seen + 1)
    return out


def to_markdown(samples: Sequence[SampleOutcomes], tests: Sequence[PairedTest], table, fmt_p) -> list[str]:
    """The report's per-sample section: a table of samples x arms ("k/n" seeds right) and McNemar's tests.
    `table` and `fmt_p` are the report's own Markdown helpers."""
    if not samples:
        return []
    counts = right_per_sample(samples)
    labels = list(counts)
    size = max(len(c) for c in counts.values())
    out = ["## Which test samples each arm gets right", ""]
    out.append(
        "Per test sample (by its index in the test split; each run's `test_samples.jsonl` has the answers): "
        "how many of the arm's seeds answered it exactly right."
    )
    out.append("")
    for label in labels:
        always = sum(1 for right, seen in counts[label] if seen and right == seen)
        never = sum(1 for right, seen in counts[label] if seen and right == 0)
        out.append(f"- {label}: right in every seed on {always} of {len(counts[label])}, in none on {never}")
    out.append("")
    rows = []
    for i in range(min(size, LISTED)):
        cells = [f"{c[i][0]}/{c[i][1]}" if i < len(c) and c[i][1] else "-" for c in counts.values()]
        rows.append([str(i), *cells])
    out.append(table(["sample", *labels], rows))
    out.append("")
    if size > LISTED:
        out.append(f"(first {LISTED} of {size} samples; report.json lists them all)")
        out.append("")
    if tests:
        out.append(
            "McNemar's exact test on the same samples answered by two arms: (seed, sample) pairs of runs that "
            "share a seed; only the pairs where one arm is right and the other wrong count. Two-sided "
            "binomial p, Holm-corrected over the pairs of arms."
        )
        out.append("")
        out.append(
            table(
                [
                    "a",
                    "b",
                    "pairs",
                    "only a right",
                    "only b right",
                    "exact match a - b",
                    "p",
                    "p (Holm)",
                    "significant",
                ],
                [
                    [
                        t.a,
                        t.b,
                        str(t.n),
                        str(t.a_only),
                        str(t.b_only),
                        f"{t.mean_difference:+.1%}",
                        fmt_p(t.p_value),
                        fmt_p(t.p_adjusted),
                        "**yes**" if t.significant else "no",
                    ]
                    for t in tests
                ],
            )
        )
        out.append("")
    return out
