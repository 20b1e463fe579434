"""Reports: from the runs of an experiment (their own final metrics and curves) to a table per arm or trial
with means and 95% intervals across seeds, paired tests, the Pareto front of quality vs time vs memory, and
the Markdown / JSON / HTML a person or a program reads. Pure: RunData in, ReportData out (plots are drawn
by plots.py from the same data)."""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import samples as sample_outcomes
from .samples import SampleOutcomes
from .statistics import PairedTest, holm, paired_t, pareto_front, summarize

# Metrics in a report row (RunMetrics names; "task.*" from its TaskScore), in table order.
METRICS = (
    "final_valid_loss",
    "best_valid_loss",
    "valid_perplexity",
    "test_loss",
    "test_perplexity",
    "task.exact_match",
    "task.parse_rate",
    "wall_seconds",
    "train_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
    "predicted_peak_memory_bytes",
    "peak_rss_bytes",
    "trainable_parameters",
    "total_parameters",
    "adapter_bytes",
    "steps",
)
# Objectives a study may name: the numeric metrics above.
OBJECTIVES = frozenset(METRICS)
# What the paired tests look at (where the runs have it).
TESTED = ("best_valid_loss", "task.exact_match")
# Below this many paired seeds, a "significant" difference gets a caveat in the report.
FEW_PAIRS = 5
# Pareto axes, all minimized: quality, wall time, memory.
PARETO_AXES = ("best_valid_loss", "wall_seconds", "peak_memory_bytes")


def flatten_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """RunMetrics as a dict (task nested) -> {name: float} for the names in METRICS that are set."""
    if not metrics:
        return {}
    out: dict[str, float] = {}
    for name in METRICS:
        if name.startswith("task."):
            task = metrics.get("task") or {}
            value = task.get(name.split(".", 1)[1]) if isinstance(task, dict) else None
        else:
            value = metrics.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


@dataclass
class RunData:
    """One run as the report sees it: final metrics (flattened), curves, and how it ended."""

    run_id: str
    label: str  # arm name or "trial <n>"
    seed: int = 0
    backend: str = "mlx"
    status: str = ""  # the run's status: SUCCEEDED | FAILED | CANCELLED | RUNNING | QUEUED | ...
    metrics: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    train_curve: list[list[float]] = field(default_factory=list)  # [[step, train loss], ...]
    valid_curve: list[list[float]] = field(default_factory=list)  # [[step, valid loss], ...]
    budget_stopped: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    trial_status: str = ""  # studies: COMPLETE | PRUNED | FAILED | RUNNING
    sample_exact: list[bool] = field(default_factory=list)  # per test sample (TaskScore.sample_exact)

    @property
    def has_metrics(self) -> bool:
        return "best_valid_loss" in self.metrics or "final_valid_loss" in self.metrics


@dataclass
class Row:
    label: str
    run_ids: list[str]
    mean: dict[str, float]
    std: dict[str, float]
    ci95: dict[str, float]
    n: int
    params: dict[str, str]
    status: str
    backend: str
    pareto: bool = False
    per_seed: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> seed -> value
    budget_stopped: int = 0  # runs of the row stopped by the time budget (numbers from their last evaluation)


@dataclass
class Failure:
    label: str
    run_id: str
    code: str
    message: str


@dataclass
class ReportData:
    experiment_id: str
    kind: str  # comparison | study
    name: str
    status: str
    complete: bool
    objectives: list[dict[str, str]]  # [{name, direction}]
    rows: list[Row]
    tests: list[PairedTest]
    failures: list[Failure]
    notes: list[str]
    curves: dict[str, dict[str, list[list[float]]]]  # label -> {"train"|"valid": [[step, mean loss], ...]}
    setup: dict[str, Any]
    generated_at: float = field(default_factory=time.time)
    best_trial: int = -1  # studies: number of the best complete trial
    samples: list[SampleOutcomes] = field(default_factory=list)  # comparisons: per-sample test outcomes

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tests"] = [asdict(t) for t in self.tests]
        return _finite(out)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _mean_curve(curves: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """Mean loss per step over the runs that logged that step."""
    by_step: dict[float, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    return [[s, sum(v) / len(v)] for s, v in sorted(by_step.items())]


def _row(label: str, runs: list[RunData], params: dict[str, Any], status: str) -> Row:
    ok = [r for r in runs if r.has_metrics]
    mean, std, ci = {}, {}, {}
    for name in METRICS:
        s = summarize([r.metrics[name] for r in ok if name in r.metrics])
        if s.n:
            mean[name], std[name] = s.mean, s.std
            if math.isfinite(s.ci95):
                ci[name] = s.ci95
    per_seed = {name: {str(r.seed): r.metrics[name] for r in ok if name in r.metrics} for name in METRICS}
    return Row(
        label=label,
        run_ids=[r.run_id for r in runs if r.run_id],
        mean=mean,
        std=std,
        ci95=ci,
        n=len(ok),
        params={k: _param_text(v) for k, v in params.items()},
        status=status,
        backend=runs[0].backend if runs else "mlx",
        per_seed={k: v for k, v in per_seed.items() if v},
        budget_stopped=sum(r.budget_stopped for r in ok),
    )


def _failures(runs: list[RunData]) -> list[Failure]:
    out = []
    for r in runs:
        if r.status in ("FAILED", "CANCELLED") and not r.has_metrics and r.trial_status != "PRUNED":
            error = r.error or {}
            out.append(
                Failure(
                    r.label,
                    r.run_id,
                    error.get("code", r.status),
                    error.get("message", "") or ("cancelled" if r.status == "CANCELLED" else ""),
                )
            )
    return out


def _mark_pareto(rows: list[Row]) -> None:
    points = [[row.mean.get(axis, math.nan) for axis in PARETO_AXES] for row in rows]
    for row, on in zip(rows, pareto_front(points)):
        row.pareto = on


def comparison_report(
    experiment: dict[str, Any],
    arms: list[dict[str, Any]],
    runs: list[RunData],
    notes: list[str],
) -> ReportData:
    """`arms`: [{name, overrides, backend}] in request order; `runs`: every cell's run (label = arm name)."""
    rows: list[Row] = []
    for arm in arms:
        mine = [r for r in runs if r.label == arm["name"]]
        ended = [r for r in mine if r.status in ("SUCCEEDED", "FAILED", "CANCELLED")]
        ok = [r for r in mine if r.has_metrics]
        if len(ended) < len(mine) or not mine:
            status = "running"
        elif len(ok) == len(mine):
            status = "ok"
        else:
            status = "partial" if ok else "failed"
        rows.append(_row(arm["name"], mine, arm.get("overrides") or {}, status))
    _mark_pareto(rows)
    rows.sort(key=lambda row: (row.n == 0, row.mean.get("best_valid_loss", math.inf)))
    tests: list[PairedTest] = []
    for metric in TESTED:
        family = []
        for a, b in itertools.combinations([row for row in rows if row.n >= 2], 2):
            seeds = sorted(set(a.per_seed.get(metric, {})) & set(b.per_seed.get(metric, {})), key=int)
            test = paired_t(
                a.label,
                [a.per_seed[metric][s] for s in seeds],
                b.label,
                [b.per_seed[metric][s] for s in seeds],
                metric,
            )
            if test is not None:
                family.append(test)
        tests.extend(holm(family))
    labels = [row.label for row in rows]
    samples = sample_outcomes.outcomes(labels, runs)
    tests.extend(sample_outcomes.mcnemar_tests(labels, samples))
    curves = {
        arm["name"]: {
            "train": _mean_curve([r.train_curve for r in runs if r.label == arm["name"]]),
            "valid": _mean_curve([r.valid_curve for r in runs if r.label == arm["name"]]),
        }
        for arm in arms
    }
    all_notes = list(notes)
    if any(r.budget_stopped for r in runs):
        all_notes.append(
            "Rows marked (time budget) were stopped by the time budget: their numbers come from their last "
            "evaluation and step events (wall time = training time), and they have no test-split metrics."
        )
    if len(experiment.get("seeds") or [0]) < 2:
        all_notes.append("One seed per arm: no confidence intervals or significance tests.")
    return ReportData(
        experiment_id=experiment["id"],
        kind="comparison",
        name=experiment.get("name", ""),
        status=experiment.get("status", ""),
        complete=experiment.get("status") != "RUNNING",
        objectives=[{"name": "best_valid_loss", "direction": "minimize"}],
        rows=rows,
        tests=tests,
        failures=_failures(runs),
        notes=all_notes,
        curves=curves,
        setup=experiment.get("setup", {}),
        samples=samples,
    )


def study_report(
    experiment: dict[str, Any],
    trials: list[dict[str, Any]],
    runs: list[RunData],
    objectives: list[dict[str, str]],
    notes: list[str],
) -> ReportData:
    """`trials`: TrialRecord dicts by number; `runs`: one per trial that has a run (label "trial <n>")."""
    by_label = {r.label: r for r in runs}
    rows = []
    for trial in trials:
        label = f"trial {trial['number']}"
        run = by_label.get(label)
        row = _row(label, [run] if run else [], trial["params"], trial["status"])
        for name, value in (trial.get("values") or {}).items():
            row.mean.setdefault(name, value)
        rows.append(row)
    _mark_pareto(rows)
    primary = objectives[0]
    sign = -1.0 if primary["direction"] == "maximize" else 1.0

    def key(row: Row) -> tuple:
        value = row.mean.get(primary["name"], math.nan)
        order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAILED": 3}.get(row.status, 4)
        return (order, sign * value if math.isfinite(value) else math.inf)

    rows.sort(key=key)
    complete = [t for t in trials if t["status"] == "COMPLETE" and primary["name"] in (t.get("values") or {})]
    best = min(complete, key=lambda t: sign * t["values"][primary["name"]], default=None)
    curves = {
        f"trial {t['number']}": {"train": [], "valid": [list(p) for p in t.get("curve") or []]}
        for t in trials
    }
    for r in runs:
        if r.label in curves:
            curves[r.label]["train"] = r.train_curve
            if r.valid_curve:
                curves[r.label]["valid"] = r.valid_curve
    return ReportData(
        experiment_id=experiment["id"],
        kind="study",
        name=experiment.get("name", ""),
        status=experiment.get("status", ""),
        complete=experiment.get("status") != "RUNNING",
        objectives=objectives,
        rows=rows,
        tests=[],
        failures=_failures(runs),
        notes=list(notes),
        curves=curves,
        setup=experiment.get("setup", {}),
        best_trial=best["number"] if best else -1,
    )


# ---- rendering ------------------------------------------------------------------------------------------

_COLUMNS = (
    ("final_valid_loss", "final valid loss", "{:.4f}", 1.0),
    ("best_valid_loss", "best valid loss", "{:.4f}", 1.0),
    ("valid_perplexity", "valid ppl", "{:.3f}", 1.0),
    ("task.exact_match", "test exact match", "{:.1%}", 1.0),
    ("wall_seconds", "wall s", "{:.1f}", 1.0),
    ("tokens_per_second", "tokens/s", "{:,.0f}", 1.0),
    ("peak_memory_bytes", "peak mem MB", "{:,.0f}", 1e-6),
    ("predicted_peak_memory_bytes", "predicted MB", "{:,.0f}", 1e-6),
    ("trainable_parameters", "trainable params", "{:,.0f}", 1.0),
    ("adapter_bytes", "adapter MB", "{:.2f}", 1e-6),
)


def bounds(name: str) -> tuple[float, float]:
    """Where a metric can lie: every report metric is >= 0 (losses, times, sizes, speeds), fractions <= 1."""
    return (0.0, 1.0) if name.startswith("task.") else (0.0, math.inf)


def interval(name: str, mean: float, half: float) -> tuple[float, float]:
    """The 95% interval mean ± half, clipped to where the metric can lie: with 2 seeds the Student t
    half-width (t = 12.7) easily exceeds the mean of a time, and a negative time reads as nonsense."""
    low, high = bounds(name)
    return max(low, mean - half), min(high, mean + half)


def _precise(fmt: str, spread: float, scale: float) -> str:
    """`fmt` with enough decimals that `spread` (an interval half-width) shows two significant digits, so
    two rows whose intervals differ are not printed alike."""
    match = re.search(r"\.(\d+)", fmt)
    if not match or not spread or not math.isfinite(spread):
        return fmt
    shown = spread * scale * (100 if "%" in fmt else 1)
    needed = min(8, max(int(match.group(1)), 1 - math.floor(math.log10(shown))))
    return fmt[: match.start(1)] + str(needed) + fmt[match.end(1) :]


def _cell(row: Row, name: str, fmt: str, scale: float) -> str:
    if name not in row.mean:
        return "-"
    mean = row.mean[name]
    if name not in row.ci95:
        return fmt.format(mean * scale)
    half = row.ci95[name]
    fmt = _precise(fmt, half, scale)
    low, high = interval(name, mean, half)
    if (low, high) != (mean - half, mean + half):  # clipped: the interval is no longer symmetric
        return f"{fmt.format(mean * scale)} [{fmt.format(low * scale)}, {fmt.format(high * scale)}]"
    return f"{fmt.format(mean * scale)} ± {fmt.format(half * scale).replace('%', '')}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def results_table(report: ReportData) -> str:
    """The per-row table in Markdown (what the README quotes)."""
    label = "arm" if report.kind == "comparison" else "trial"
    headers = [label, "backend", "n", *(title for _, title, _, _ in _COLUMNS), "Pareto"]
    if report.kind == "study":
        headers = [label, "status", "params", *(title for _, title, _, _ in _COLUMNS), "Pareto"]
    rows = []
    for row in report.rows:
        label = f"{row.label} (time budget)" if row.budget_stopped else row.label
        first = [label, row.backend, str(row.n)]
        if report.kind == "study":
            first = [label, row.status, ", ".join(f"{k}={v}" for k, v in row.params.items())]
        cells = [_cell(row, name, fmt, scale) for name, _, fmt, scale in _COLUMNS]
        rows.append([*first, *cells, "yes" if row.pareto else ""])
    return _table(headers, rows)


def to_markdown(report: ReportData, plots: Sequence[str] = ()) -> str:
    setup = report.setup
    title = "Comparison" if report.kind == "comparison" else "Study"
    out = [f"# {title} {report.name or report.experiment_id}", ""]
    out.append(
        f"Experiment `{report.experiment_id}`, status **{report.status}**"
        + ("" if report.complete else " (partial: runs are still going)")
        + f"; report generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.generated_at))}."
    )
    out.append("")
    for key, value in setup.items():
        out.append(f"- {key}: {value}")
    out.append("")
    if report.kind == "comparison":
        out.append("## Results")
        out.append("")
        out.append(
            "Mean over the seeds that produced metrics, ± the half-width of the 95% confidence interval "
            "(Student t); where that interval would leave a metric's range (below 0 for a time or a size, "
            "outside 0-100% for exact match) it is shown clipped, as [low, high]. Peak memory is what the backend measured (MLX: its allocator's peak; PyTorch on a "
            "CPU: the growth of the process's resident memory); predicted is the engine's memory model."
        )
    else:
        objectives = ", ".join(f"{o['direction']} {o['name']}" for o in report.objectives)
        out.append("## Trials")
        out.append("")
        out.append(f"Objective: {objectives}. Best first.")
        if report.best_trial >= 0:
            best = next(r for r in report.rows if r.label == f"trial {report.best_trial}")
            params = ", ".join(f"{k}={v}" for k, v in best.params.items())
            value = best.mean.get(report.objectives[0]["name"], math.nan)
            out.append("")
            out.append(
                f"**Best: trial {report.best_trial}** ({params}): {report.objectives[0]['name']} = {value:.4f}."
            )
    out.append("")
    out.append(results_table(report))
    out.append("")
    seed_tests = [t for t in report.tests if t.test == "paired-t"]
    if seed_tests:
        out.append("## Which differences are significant")
        out.append("")
        out.append(
            "Paired t-test across seeds (a pair shares a seed: the same data order and initialization), "
            "two-sided, p-values Holm-corrected over all pairs of arms per metric; significant = p (Holm) < "
            "0.05. d_z = mean difference / standard deviation of the differences."
        )
        out.append("")
        few = min(t.n for t in seed_tests) < FEW_PAIRS
        rows = [
            [
                t.a,
                t.b,
                t.metric,
                str(t.n),
                f"{t.mean_difference:+.4g}",
                f"{t.statistic:.3g}",
                _fmt_p(t.p_value),
                _fmt_p(t.p_adjusted),
                f"{t.effect_size:.3g}",
                ("**yes**" + (" (few seeds\\*)" if t.n < FEW_PAIRS else "")) if t.significant else "no",
            ]
            for t in seed_tests
        ]
        out.append(
            _table(
                ["a", "b", "metric", "pairs", "mean a - b", "t", "p", "p (Holm)", "d_z", "significant"], rows
            )
        )
        out.append("")
        if few:
            out.append(
                f"\\* Fewer than {FEW_PAIRS} seeds: a paired t-test on {min(t.n for t in seed_tests)} pairs "
                "rests on one or two differences and their spread, so a small p can come from a spread "
                "that happens to be tiny. Read these as a hint and rerun with 5 or more seeds before "
                "calling a difference real."
            )
            out.append("")
    mcnemar = [t for t in report.tests if t.test == "mcnemar-exact"]
    out.extend(sample_outcomes.to_markdown(report.samples, mcnemar, _table, _fmt_p))
    if report.failures:
        out.append("## Runs that failed")
        out.append("")
        out.append(
            _table(
                ["row", "run", "code", "error"],
                [[f.label, f.run_id or "(not submitted)", f.code, f.message] for f in report.failures],
            )
        )
        out.append("")
    if report.notes:
        out.append("## Notes")
        out.append("")
        out.extend(f"- {note}" for note in report.notes)
        out.append("")
    if plots:
        out.append("## Plots")
        out.append("")
        out.extend(f"![{name}]({name}.png)" for name in plots)
        out.append("")
    return "\n".join(out)


def to_html(report: ReportData, markdown: str, images: dict[str, str]) -> str:
    """A self-contained page: the Markdown rendered (markdown-it, CommonMark with tables), plots inline as
    base64 PNG, so it opens anywhere without the files beside it."""
    import html

    from markdown_it import MarkdownIt

    for name, data in images.items():
        markdown = markdown.replace(f"]({name}.png)", f"](data:image/png;base64,{data})")
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return "\n".join(
        [
            "<!doctype html><meta charset='utf-8'>",
            f"<title>{html.escape(report.name or report.experiment_id)}</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
            "code{background:#f4f4f4;padding:0 3px}</style>",
            body,
        ]
    )
