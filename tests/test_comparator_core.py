"""The comparator's pure parts and its Redis records, without services: statistics against scipy, the
pruning rules, the report's numbers and Markdown, the experiment store's atomic writes and leases, and the
PyTorch backend's learning-rate schedule against the engine's."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from services.comparator.backends.local import LocalRunner
from services.comparator.pruning import PruningRule, judge
from services.comparator.report import RunData, comparison_report, study_report, to_html, to_markdown
from services.comparator.state import Cell, ExperimentRecord, ExperimentStore, LeaseLost, TrialRecord
from services.comparator.statistics import holm, mcnemar_exact, paired_t, pareto_front, summarize

# ---- statistics ----


def test_mean_and_confidence_interval_match_scipy():
    values = [1.2, 1.5, 1.1, 1.4]
    s = summarize(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=s.mean, scale=stats.sem(values))
    assert s.n == 4 and s.ci95 == pytest.approx((high - low) / 2)
    assert s.std == pytest.approx(stats.tstd(values))
    one = summarize([2.0, float("nan")])
    assert one.n == 1 and one.std == 0.0 and math.isnan(one.ci95)


def test_paired_test_and_holm():
    a, b = [1.0, 1.2, 0.9, 1.1], [1.3, 1.6, 1.1, 1.5]
    test = paired_t("a", a, "b", b, "best_valid_loss")
    reference = stats.ttest_rel(a, b)
    assert test.p_value == pytest.approx(reference.pvalue) and test.statistic == pytest.approx(
        reference.statistic
    )
    assert test.mean_difference == pytest.approx(-0.325) and test.effect_size < 0
    assert paired_t("a", [1.0], "b", [2.0], "m") is None  # one pair: no test
    constant = paired_t("a", [1.0, 2.0], "b", [1.5, 2.5], "m")
    assert constant.p_value == 0.0  # a difference without spread is certain
    tests = holm([paired_t("a", a, "b", b, "m"), paired_t("a", a, "c", [1.0, 1.2, 0.9, 1.15], "m")])
    ps = sorted(t.p_value for t in tests)
    assert sorted(t.p_adjusted for t in tests) == pytest.approx(
        [min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])]
    )


def test_pareto_front():
    points = [[1.0, 10, 5], [2.0, 5, 5], [2.5, 6, 6], [0.9, 20, 1], [math.nan, 1, 1]]
    assert pareto_front(points) == [True, True, False, True, False]


# ---- pruning ----


def _curve(*losses, every=2):
    return [[i * every, v] for i, v in enumerate(losses)]


def test_median_rule():
    rule = PruningRule(enabled=True, min_steps=2, warmup_trials=3)
    finished = [_curve(3.0, 2.0, 1.5), _curve(3.0, 2.2, 1.6), _curve(3.0, 1.8, 1.4)]
    bad, good = _curve(3.0, 2.5), _curve(3.0, 1.9)
    verdict = judge(rule, bad, finished)
    assert verdict.prune and verdict.step == 2 and verdict.value == 2.5 and "median 2.0000" in verdict.reason
    assert not judge(rule, good, finished).prune
    assert not judge(rule, bad, finished[:2]).prune  # before the warm-up trials finished
    assert not judge(PruningRule(enabled=True, min_steps=4, warmup_trials=3), bad, finished).prune
    assert not judge(PruningRule(enabled=False), bad, finished).prune
    assert not judge(rule, _curve(3.0), finished).prune  # step 0 (the untrained model) decides nothing


def test_successive_halving():
    rule = PruningRule(enabled=True, min_steps=2, warmup_trials=0, rule="halving")
    others = [_curve(3.0, 1.0), _curve(3.0, 1.1), _curve(3.0, 1.2), _curve(3.0, 1.3), _curve(3.0, 1.4)]
    assert judge(rule, _curve(3.0, 1.5), [], others).prune  # not in the best third of 6 at rung 2
    assert not judge(rule, _curve(3.0, 0.9), [], others).prune
    assert not judge(rule, _curve(3.0, 1.5), [], others[:1]).prune  # fewer than 3 at the rung


# ---- reports ----


def _run(label, seed, loss, status="SUCCEEDED", **extra):
    metrics = {
        "best_valid_loss": loss,
        "final_valid_loss": loss,
        "wall_seconds": 10.0 + seed,
        "peak_memory_bytes": 1e8,
    }
    return RunData(
        run_id=f"r-{label}-{seed}",
        label=label,
        seed=seed,
        status=status,
        metrics=metrics if status == "SUCCEEDED" else {},
        train_curve=[[1, loss + 1], [2, loss]],
        valid_curve=[[0, 3.0], [2, loss]],
        **extra,
    )


def test_comparison_report_rows_tests_and_markdown():
    arms = [
        {"name": "lora", "overrides": {"method": "lora"}},
        {"name": "full", "overrides": {"method": "full"}},
    ]
    arms.append({"name": "broken", "overrides": {"rank": 9}})
    runs = [_run("lora", s, v) for s, v in ((0, 1.0), (1, 1.2), (2, 1.1))]
    runs += [_run("full", s, v) for s, v in ((0, 1.5), (1, 1.6), (2, 1.7))]
    error = {"code": "RESOURCE_EXHAUSTED", "field": "", "message": "out of memory"}
    runs += [_run("broken", s, 0.0, status="FAILED", error=error) for s in (0, 1, 2)]
    report = comparison_report({"id": "x-1", "status": "SUCCEEDED", "seeds": [0, 1, 2]}, arms, runs, [])
    assert [r.label for r in report.rows] == ["lora", "full", "broken"]
    lora = report.rows[0]
    assert lora.n == 3 and lora.mean["best_valid_loss"] == pytest.approx(1.1) and lora.status == "ok"
    assert lora.ci95["best_valid_loss"] == pytest.approx(summarize([1.0, 1.2, 1.1]).ci95)
    assert report.rows[2].status == "failed" and len(report.failures) == 3
    (test,) = [t for t in report.tests if t.metric == "best_valid_loss"]
    assert {test.a, test.b} == {"lora", "full"} and test.n == 3
    assert report.curves["lora"]["valid"] == [[0, 3.0], [2, pytest.approx(1.1)]]
    markdown = to_markdown(report, ["pareto"])
    assert "| lora | mlx | 3 |" in markdown and "1.1000 ± " in markdown
    assert "out of memory" in markdown and "![pareto](pareto.png)" in markdown
    assert report.to_json()["rows"][0]["label"] == "lora"


def test_two_seed_report_clips_intervals_shows_digits_and_caveats_significance():
    """Two seeds: Student t's 12.7 makes a time's interval cross 0 (shown clipped, and the Pareto plot's
    bars stop at 0); a tiny but consistent loss difference is "significant" with a caveat and enough digits;
    report.html is the Markdown rendered, not its source."""
    from services.comparator import plots

    arms = [
        {"name": "lora", "overrides": {"method": "lora"}},
        {"name": "dora", "overrides": {"method": "dora"}},
    ]
    runs = [_run("lora", s, v) for s, v in ((0, 1.23450), (1, 1.23460))]
    runs += [_run("dora", s, v) for s, v in ((0, 1.23480), (1, 1.23491))]
    for run in runs:
        run.metrics["wall_seconds"] = 200.0 + 60.0 * run.seed  # 200 and 260 s: half-width 381 s
    report = comparison_report({"id": "x-2", "status": "SUCCEEDED", "seeds": [0, 1]}, arms, runs, [])
    markdown = to_markdown(report)
    lora = next(line for line in markdown.splitlines() if line.startswith("| lora |"))
    assert "230.0 [0.0, 611.2]" in lora  # clipped at 0, not "230.0 ± 381.2"
    assert "1.23455 ± 0.00064" in lora  # two significant digits of the half-width, not "1.2346 ± 0.0006"
    (test,) = [t for t in report.tests if t.metric == "best_valid_loss"]
    assert test.n == 2 and test.significant, test
    assert "| **yes** (few seeds\\*) |" in markdown and "Fewer than 5 seeds" in markdown
    assert f"{test.mean_difference:+.4g}" in markdown and "+-0.0003" not in markdown
    pareto = plots.pareto(report)
    for point in __import__("json").loads(pareto.data_json):
        assert point["wall_seconds_low"] == 0.0 and point["wall_seconds_high"] > point["wall_seconds"]

    page = to_html(report, markdown, {})
    assert "<strong>SUCCEEDED</strong>" in page and "<code>x-2</code>" in page and "<table>" in page
    assert "**" not in page and "`" not in page and "|---" not in page


def test_mcnemar_on_per_sample_outcomes_pairs_runs_by_seed_and_sample():
    """Two arms answering the same 12 test samples in 2 seeds: McNemar's exact test on the discordant
    (seed, sample) pairs, equal to scipy's binomial test; a third arm without outcomes is left out; the
    Markdown lists which samples each arm gets right."""
    arms = [{"name": n, "overrides": {}} for n in ("lora", "dora", "full")]
    lora = {0: [True] * 10 + [False] * 2, 1: [True] * 9 + [False] * 3}
    dora = {0: [True] * 4 + [False] * 8, 1: [False] * 11 + [True]}
    runs = []
    for seed in (0, 1):
        runs.append(_run("lora", seed, 1.0 + seed / 10))
        runs[-1].sample_exact = lora[seed]
        runs.append(_run("dora", seed, 1.3 + seed / 10))
        runs[-1].sample_exact = dora[seed]
        runs.append(_run("full", seed, 1.5 + seed / 10))
    report = comparison_report({"id": "x-3", "status": "SUCCEEDED", "seeds": [0, 1]}, arms, runs, [])
    (test,) = [t for t in report.tests if t.test == "mcnemar-exact"]
    pairs = [(x, y) for s in (0, 1) for x, y in zip(lora[s], dora[s])]
    a_only = sum(x and not y for x, y in pairs)
    b_only = sum(y and not x for x, y in pairs)
    assert (test.a, test.b, test.n, test.a_only, test.b_only) == ("lora", "dora", 24, a_only, b_only)
    assert (a_only, b_only) == (15, 1)
    assert test.p_value == pytest.approx(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    assert test.mean_difference == pytest.approx((a_only - b_only) / 24) and test.significant
    assert [(o.label, o.seed) for o in report.samples] == [("lora", 0), ("lora", 1), ("dora", 0), ("dora", 1)]
    markdown = to_markdown(report)
    assert "## Which test samples each arm gets right" in markdown
    assert "| 11 | 0/2 | 1/2 |" in markdown and "| 0 | 2/2 | 1/2 |" in markdown
    assert "- lora: right in every seed on 9 of 12, in none on 2" in markdown
    assert "| lora | dora | 24 | 15 | 1 | +58.3% |" in markdown
    # Within the paired-t table only the across-seed tests appear.
    section = markdown.split("## Which differences are significant")[1].split("##")[0]
    assert "mcnemar" not in section and "only a right" not in section
    no_discord = mcnemar_exact("a", [True, False], "b", [True, False])
    assert no_discord.p_value == 1.0 and no_discord.effect_size == 0.0
    assert mcnemar_exact("a", [], "b", []) is None
    assert report.to_json()["samples"][0]["exact"] == lora[0]


def test_study_report_best_trial():
    trials = [
        {
            "number": 0,
            "params": {"learning_rate": 1e-3},
            "status": "COMPLETE",
            "values": {"best_valid_loss": 1.4},
        },
        {
            "number": 1,
            "params": {"learning_rate": 3e-3},
            "status": "COMPLETE",
            "values": {"best_valid_loss": 1.2},
        },
        {
            "number": 2,
            "params": {"learning_rate": 9e-2},
            "status": "PRUNED",
            "values": {"best_valid_loss": 2.0},
        },
    ]
    runs = [_run(f"trial {t['number']}", 0, t["values"]["best_valid_loss"]) for t in trials]
    runs[2].metrics, runs[2].trial_status = {}, "PRUNED"
    objectives = [{"name": "best_valid_loss", "direction": "minimize"}]
    report = study_report({"id": "x-2", "status": "SUCCEEDED"}, trials, runs, objectives, [])
    assert report.best_trial == 1 and [r.label for r in report.rows] == ["trial 1", "trial 0", "trial 2"]
    assert "**Best: trial 1** (learning_rate=0.003)" in to_markdown(report)
    assert report.failures == []  # a pruned trial is not a failure


# ---- the experiment store ----


def test_store_writes_atomically_and_respects_leases(store):
    experiments = ExperimentStore(store.r, store.prefix)
    record = ExperimentRecord(id="x-a", kind="comparison", name="n", request={"seeds": [0]}, total_runs=1)
    experiments.create(record, [("cells", "lora/0", Cell(arm="lora", seed=0))])
    assert experiments.active() == ["x-a"] and experiments.cells("x-a")["lora/0"].state == "PENDING"
    assert experiments.acquire("x-a", "me", 5) and not experiments.acquire("x-a", "you", 5)
    cell = Cell(arm="lora", seed=0, run_id="r-1", state="SUBMITTED")
    experiments.update("x-a", owner="me", members=[("cells", cell.key, cell)], runs=["r-1", "r-1"])
    with pytest.raises(LeaseLost):  # a comparator that lost the lease writes nothing
        experiments.update("x-a", owner="you", runs=["r-2"])
    assert experiments.run_ids("x-a") == ["r-1"]
    experiments.update("x-a", owner="me", to="SUCCEEDED", events=[("log", {"message": "done"})])
    assert experiments.active() == [] and experiments.get("x-a").status == "SUCCEEDED"
    kinds = [(e.kind, e.data.get("status")) for e in experiments.read_events("x-a")]
    assert kinds == [("status", "RUNNING"), ("log", None), ("status", "SUCCEEDED")]
    experiments.release("x-a", "you")
    assert experiments.lease_holder("x-a") == "me"
    experiments.release("x-a", "me")
    assert experiments.lease_holder("x-a") == ""
    for i in range(3):
        experiments.create(ExperimentRecord(id=f"x-{i}", kind="study"))
    page, token = experiments.list(2)
    assert [r.id for r in page] == ["x-2", "x-1"]
    rest, token = experiments.list(2, token)
    assert [r.id for r in rest] == ["x-0", "x-a"] and token == ""
    trial = TrialRecord(number=3, params={"rank": 4})
    experiments.update("x-0", members=[("trials", trial.key, trial)])
    assert experiments.trials("x-0")[0].params == {"rank": 4}


# ---- the PyTorch backend ----


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_torch_schedule_is_the_engines(schedule):
    from services.common.spec import RunSpec
    from services.comparator.backends.torch_peft import learning_rate
    from services.trainer.engine.training import learning_rate_schedule

    spec = RunSpec.from_dict({"iters": 20, "warmup_steps": 4, "schedule": schedule, "learning_rate": 1e-3})
    mlx_schedule = learning_rate_schedule(spec)
    for step in range(21):
        assert learning_rate(spec, step) == pytest.approx(float(mlx_schedule(step)), rel=1e-5, abs=1e-9)


def test_missing_torch_is_reported_with_the_install_hint(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    available, why = LocalRunner(tmp_path, tmp_path, tmp_path).available()
    assert not available and "peft not installed" in why and "peftlab[torch]" in why


# ---- the command line ----


def test_cli_builds_the_requests():
    from services.cli import experiments
    from services.cli.main import build_parser

    args = build_parser().parse_args(
        ["compare", "--methods", "lora,full", "--iters", "30", "--set", "rank=16", "--torch", "lora"]
    )
    base = experiments._base_spec(args)
    assert (base.iters, base.warmup_steps, base.rank) == (30, 3, 16)  # a short run gets a short warmup
    assert args.handler is experiments.cmd_compare and args.torch == "lora"
    # A study's default space comes from the optimizer through the gateway (one source): that path is
    # tests/test_ui_gateway.py::test_default_space_is_the_optimizers_and_the_cli_and_ui_study_over_it.
