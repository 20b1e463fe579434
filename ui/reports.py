"""The data behind the Compare and Study pages, from the comparator's messages: the report table with
confidence intervals, bars, the Pareto view, trials, best-so-far, and the requests the forms build.
Pure functions of protos (no Streamlit), so they are tested on messages built in the test."""

from __future__ import annotations

import math
from dataclasses import dataclass

from peftlab.v1 import common_pb2, comparator_pb2, optimizer_pb2
from scipy import stats

from services.common.codec import spec_fields
from services.common.experiment_rules import MAX_SEEDS
from ui import formatting

METHODS = ("lora", "dora", "qlora", "full")
ADAPTER_METHODS = ("lora", "dora", "qlora")
# Report metrics: key in ReportRow.mean/std, column label, True when lower is better.
METRICS = (
    ("best_valid_loss", "best valid loss", True),
    ("task.exact_match", "exact match", False),
    ("wall_seconds", "time (s)", True),
    ("peak_memory_bytes", "peak memory (GB)", True),
    ("tokens_per_second", "tokens/s", False),
)
OBJECTIVES = {  # what a study can optimize, and its direction
    "best_valid_loss": optimizer_pb2.StudyObjective.MINIMIZE,
    "task.exact_match": optimizer_pb2.StudyObjective.MAXIMIZE,
    "wall_seconds": optimizer_pb2.StudyObjective.MINIMIZE,
    "peak_memory_bytes": optimizer_pb2.StudyObjective.MINIMIZE,
}
RUN_SPEC_FIELDS = set(common_pb2.RunSpec.DESCRIPTOR.fields_by_name)


def _scaled(metric: str, value: float) -> float:
    return value / formatting.GB if metric == "peak_memory_bytes" else value


def confidence_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean of n runs; None for a single run (no spread to go on)."""
    if n < 2 or not math.isfinite(std):
        return None
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def row_interval(row: comparator_pb2.ReportRow, metric: str) -> tuple[float, float] | None:
    """The 95% interval of a row's mean: the comparator's own (ci95) when it sent one, else from std and n;
    clipped to where the metric can lie (>= 0, and <= 1 for a fraction), as the comparator's report does: with
    2 seeds Student t's half-width easily exceeds a time's mean."""
    mean = _scaled(metric, row.mean[metric])
    if metric in row.ci95:
        half = _scaled(metric, row.ci95[metric])
        interval = (mean - half, mean + half)
    else:
        interval = confidence_interval(
            mean, _scaled(metric, row.std.get(metric, 0.0)), row.n or len(row.run_ids)
        )
    if interval is None:
        return None
    high = 1.0 if metric.startswith("task.") else math.inf
    return max(0.0, interval[0]), min(high, interval[1])


def report_table(report: comparator_pb2.Report) -> list[dict]:
    """One row per report row: the mean of each metric with its 95% confidence interval, as text."""
    table = []
    statuses = any(row.status for row in report.rows)
    for row in report.rows:
        out = {"label": row.label, "runs": row.n or len(row.run_ids), "pareto": "yes" if row.pareto else ""}
        if statuses:
            out["status"] = row.status
        for key, label, _ in METRICS:
            if key not in row.mean:
                out[label] = "-"
                continue
            mean = _scaled(key, row.mean[key])
            interval = row_interval(row, key)
            text = _percent if key.startswith("task.") else _number
            out[label] = (
                f"{text(mean)} [{text(interval[0])}, {text(interval[1])}]" if interval else text(mean)
            )
        out["parameters"] = ", ".join(f"{k}={v}" for k, v in sorted(row.params.items()))
        table.append(out)
    return table


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _number(value: float) -> str:
    """Three significant digits, whole numbers from 1000 up (216.5 s, 1,234 tokens/s, 0.312 GB)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def bar_rows(report: comparator_pb2.Report, metric: str) -> list[dict]:
    """label, mean and its 95% interval (low/high equal the mean for single runs) of one metric."""
    rows = []
    for row in report.rows:
        if metric not in row.mean:
            continue
        mean = _scaled(metric, row.mean[metric])
        low, high = row_interval(row, metric) or (mean, mean)
        rows.append({"label": row.label, "mean": mean, "low": low, "high": high})
    return rows


def pareto_rows(report: comparator_pb2.Report) -> list[dict]:
    """Quality vs time vs memory, one point per row that has all three."""
    out = []
    for row in report.rows:
        mean = row.mean
        if not all(k in mean for k in ("best_valid_loss", "wall_seconds", "peak_memory_bytes")):
            continue
        out.append(
            {
                "label": row.label,
                "best_valid_loss": mean["best_valid_loss"],
                "wall_seconds": mean["wall_seconds"],
                "peak_memory_gb": mean["peak_memory_bytes"] / formatting.GB,
                "front": "Pareto front" if row.pareto else "dominated",
            }
        )
    return out


def stat_tests(report: comparator_pb2.Report) -> list[dict]:
    """Pairwise tests; significance after Holm's correction when the comparator applied it."""
    return [
        {
            "a": t.a,
            "b": t.b,
            "metric": t.metric,
            "test": t.test,
            "pairs": t.n or None,
            "mean a - b": round(t.mean_difference, 4),
            "statistic": round(t.statistic, 4),
            "p-value": round(t.p_value, 4),
            "p (Holm)": round(t.p_adjusted, 4) if t.p_adjusted else None,
            "effect size": round(t.effect_size, 3),
            "significant": "yes" if (t.significant if t.p_adjusted else t.p_value < 0.05) else "",
            # McNemar's test on per-sample outcomes: the discordant (seed, sample) pairs it rests on.
            "only a right": t.a_only if t.test == "mcnemar-exact" else None,
            "only b right": t.b_only if t.test == "mcnemar-exact" else None,
        }
        for t in report.tests
    ]


def sample_table(report: comparator_pb2.Report) -> list[dict]:
    """Which test samples each arm gets right: one row per sample index, one column per arm, "k/n" = k of
    the arm's n seeds answered it exactly right."""
    counts: dict[str, list[list[int]]] = {}
    for outcome in report.samples:
        per = counts.setdefault(outcome.label, [])
        per.extend([0, 0] for _ in range(len(outcome.exact) - len(per)))
        for i, hit in enumerate(outcome.exact):
            per[i][0] += int(hit)
            per[i][1] += 1
    size = max((len(c) for c in counts.values()), default=0)
    return [
        {"sample": i}
        | {label: f"{c[i][0]}/{c[i][1]}" if i < len(c) and c[i][1] else "-" for label, c in counts.items()}
        for i in range(size)
    ]


def run_labels(report: comparator_pb2.Report | None, experiment: comparator_pb2.Experiment) -> dict[str, str]:
    """run id -> the report row (arm or trial) it belongs to; runs not in the report keep their id."""
    labels = {run_id: run_id for run_id in experiment.run_ids}
    if report is not None:
        for row in report.rows:
            for run_id in row.run_ids:
                labels[run_id] = row.label
    return labels


# ---- comparisons: the form's request ----


@dataclass(frozen=True)
class ComparisonForm:
    name: str
    model: str
    data: str
    iters: int
    methods: tuple[str, ...]
    rank: int
    seeds: int
    test_samples: int = 20


def check_comparison(form: ComparisonForm) -> list[str]:
    problems = []
    if not form.methods:
        problems.append("Pick at least one method to compare.")
    if not 1 <= form.seeds <= MAX_SEEDS:
        problems.append(f"Seeds must be between 1 and {MAX_SEEDS}.")
    if form.iters < 1:
        problems.append("Steps must be at least 1.")
    if not 1 <= form.rank <= 1024:
        problems.append("Rank must be between 1 and 1024.")
    return problems


def comparison_request(form: ComparisonForm) -> comparator_pb2.StartComparisonRequest:
    base = common_pb2.RunSpec(
        model=form.model,
        data=form.data,
        iters=form.iters,
        test_samples=form.test_samples,
    )  # warmup and learning rates: the engine's defaults (10% of the steps; per method)
    arms = []
    for method in form.methods:
        overrides = common_pb2.RunSpec(method=method)
        if method in ADAPTER_METHODS:
            overrides.rank = form.rank
            overrides.alpha = 2.0 * form.rank
        name = f"{method}-r{form.rank}" if method in ADAPTER_METHODS else method
        arms.append(comparator_pb2.ComparisonArm(name=name, overrides=overrides))
    return comparator_pb2.StartComparisonRequest(
        name=form.name, base=base, arms=arms, seeds=list(range(form.seeds))
    )


# ---- studies: the form's request, trials, best so far ----


@dataclass(frozen=True)
class StudyForm:
    name: str
    model: str
    data: str
    iters: int
    methods: tuple[str, ...]
    n_trials: int
    parallelism: int
    objective: str
    pruning: bool
    seed: int = 0
    test_samples: int = 20


def check_study(form: StudyForm) -> list[str]:
    problems = []
    if not form.methods:
        problems.append("Pick at least one method to search over.")
    if not 1 <= form.n_trials <= 1000:
        problems.append("Trials must be between 1 and 1000.")
    if not 1 <= form.parallelism <= max(form.n_trials, 1):
        problems.append("Trials at once must be between 1 and the number of trials.")
    if form.objective not in OBJECTIVES:
        problems.append(f"Unknown objective {form.objective!r}.")
    if form.iters < 1:
        problems.append("Steps must be at least 1.")
    return problems


def default_space_request(form: StudyForm) -> optimizer_pb2.GetDefaultSpaceRequest:
    """What to ask the gateway (the optimizer's GetDefaultSpace) for the study's search space."""
    return optimizer_pb2.GetDefaultSpaceRequest(methods=form.methods, total_steps=form.iters)


def study_request(form: StudyForm, space: optimizer_pb2.SearchSpace) -> comparator_pb2.StartStudyRequest:
    """The study over `space`, the optimizer's default space for the form's methods (one source for it)."""
    base = common_pb2.RunSpec(
        model=form.model,
        data=form.data,
        iters=form.iters,
        # Scoring the test split (generation) is the slowest part of a short run: only for exact match.
        test_samples=form.test_samples if form.objective == "task.exact_match" else 0,
    )
    if len(form.methods) == 1:
        base.method = form.methods[0]
    objective = optimizer_pb2.StudyObjective(name=form.objective, direction=OBJECTIVES[form.objective])
    return comparator_pb2.StartStudyRequest(
        name=form.name,
        base=base,
        space=space,
        n_trials=form.n_trials,
        parallelism=form.parallelism,
        objectives=[objective],
        pruning=comparator_pb2.Pruning(enabled=form.pruning, min_steps=max(form.iters // 4, 1)),
        seed=form.seed,
    )


def describe_space(space: optimizer_pb2.SearchSpace) -> list[str]:
    """One line per parameter, for the page: name and range (or choices)."""
    lines = []
    for p in space.parameters:
        kind = p.WhichOneof("domain")
        if kind == "float_range":
            text = f"{p.name}: {p.float_range.low:.3g} to {p.float_range.high:.3g}"
            text += " (log)" if p.float_range.log else ""
        elif kind == "int_range":
            text = f"{p.name}: {p.int_range.low} to {p.int_range.high}" + (
                " (log)" if p.int_range.log else ""
            )
        else:
            text = f"{p.name}: " + ", ".join(str(param_value(v)) for v in p.categorical.values)
        if p.HasField("condition"):
            text += (
                f" (when {p.condition.parent} is "
                + "/".join(str(param_value(v)) for v in p.condition.values)
                + ")"
            )
        lines.append(text)
    return lines


def param_value(value: optimizer_pb2.ParameterValue):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def objective_of(experiment: comparator_pb2.Experiment) -> tuple[str, bool]:
    """(name, minimize) of the study's first objective."""
    objectives = experiment.study.objectives
    if not objectives:
        return "best_valid_loss", True
    first = objectives[0]
    return first.name, first.direction != optimizer_pb2.StudyObjective.MAXIMIZE


def trials_table(experiment: comparator_pb2.Experiment) -> list[dict]:
    name, _ = objective_of(experiment)
    rows = []
    # Trials are numbered from 0, as the comparator numbers them in its reports ("trial 0") and run labels.
    for number, trial in enumerate(experiment.trials):
        row = {"trial": number, "status": formatting.trial_status(trial.status), "run": trial.trial_id}
        row[name] = trial.values[name] if name in trial.values else None
        for key, value in sorted(trial.params.items()):
            row[key] = param_value(value)
        rows.append(row)
    return rows


def best_so_far(experiment: comparator_pb2.Experiment) -> list[dict]:
    """The objective of each trial that has one, and the best value up to it."""
    name, minimize = objective_of(experiment)
    best = None
    out = []
    for number, trial in enumerate(experiment.trials):
        if name not in trial.values or formatting.trial_status(trial.status) not in ("COMPLETE", "PRUNED"):
            continue
        value = trial.values[name]
        best = value if best is None else (min(best, value) if minimize else max(best, value))
        out.append({"trial": number, "value": value, "best so far": best})
    return out


def best_trial(experiment: comparator_pb2.Experiment) -> optimizer_pb2.Trial | None:
    name, minimize = objective_of(experiment)
    done = [
        t for t in experiment.trials if name in t.values and formatting.trial_status(t.status) == "COMPLETE"
    ]
    if not done:
        return None
    return (min if minimize else max)(done, key=lambda t: t.values[name])


def trial_spec(experiment: comparator_pb2.Experiment, trial: optimizer_pb2.Trial) -> dict:
    """The study's base spec with the trial's parameters applied: what "train it" submits."""
    spec = spec_fields(experiment.study.base)
    for key, value in trial.params.items():
        if key in RUN_SPEC_FIELDS:
            spec[key] = param_value(value)
    if "rank" in spec and "alpha" not in spec:
        spec["alpha"] = 2.0 * spec["rank"]
    return spec
