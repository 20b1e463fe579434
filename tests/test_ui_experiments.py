"""The Compare, Study and Playground pages. Compare and Study: a comparison and a study started from their
forms and run to the end by the real comparator, optimizer and trainer (tiny model), whose reports the pages
must show as the comparator computed them; their forms' checks; their errors against a gateway whose
comparator is down; and the drawing of comparator messages built here, for the cases a short real run does
not produce (failures, partial rows, notes). Playground: both sides stream from the real trainer."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from peftlab.v1 import comparator_pb2, optimizer_pb2
from streamlit.testing.v1 import AppTest

from ui import state

pytestmark = pytest.mark.usefixtures("keep_main_module")
APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
TIMEOUT = 60


@pytest.fixture
def gateway_env(ui_stack, monkeypatch):
    from ui import client

    monkeypatch.setenv("PEFTLAB_GATEWAY", ui_stack.gateway.address)
    monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
    client.refresh()
    return ui_stack


@pytest.fixture
def comparator_down(ui_stack, monkeypatch):
    """A second gateway on the UI stack's Redis whose comparator address has nobody listening."""
    from service_helpers import start_gateway

    from ui import client

    gateway = start_gateway(ui_stack.redis_url, ui_stack.prefix, ui_stack.data_root, ui_stack.runs_root)
    monkeypatch.setenv("PEFTLAB_GATEWAY", gateway.address)
    monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
    client.refresh()
    yield gateway
    gateway.stop(grace=0)
    client.refresh()


def _page(page: str, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# ---- the pages against the gateway ----


def test_compare_form_checks_and_a_comparator_that_is_down(comparator_down):
    at = _page(state.PAGE_COMPARE)
    # No comparator behind this gateway: the list reads as a message, not a traceback.
    assert any(e.startswith("Listing experiments failed") for e in _errors(at)), _errors(at)
    at.multiselect(key="compare.methods").set_value([])
    at.button(key="FormSubmitter:compare.form-Start comparison").click().run()
    assert not at.exception
    assert "Pick at least one method to compare." in _errors(at)
    assert not any(e.startswith("Starting the comparison") for e in _errors(at))

    at.multiselect(key="compare.methods").set_value(["lora", "qlora"])
    at.button(key="FormSubmitter:compare.form-Start comparison").click().run()
    assert not at.exception
    assert any(e.startswith("Starting the comparison failed") for e in _errors(at)), _errors(at)


def test_study_form_checks_and_a_comparator_that_is_down(comparator_down):
    at = _page(state.PAGE_STUDY)
    at.multiselect(key="study.methods").set_value([])
    at.number_input(key="study.n_trials").set_value(2)
    at.number_input(key="study.parallelism").set_value(3)
    at.button(key="FormSubmitter:study.form-Start study").click().run()
    assert not at.exception
    errors = _errors(at)
    assert "Pick at least one method to search over." in errors
    assert "Trials at once must be between 1 and the number of trials." in errors
    assert not any(e.startswith("Starting the study") for e in errors)

    at.multiselect(key="study.methods").set_value(["lora"])
    at.number_input(key="study.parallelism").set_value(1)
    at.button(key="FormSubmitter:study.form-Start study").click().run()
    assert not at.exception
    # This gateway has neither optimizer nor comparator: the space, asked for first, is what fails.
    failed = "Asking the optimizer for the default search space failed"
    assert any(e.startswith(failed) for e in _errors(at)), _errors(at)


# ---- a comparison and a study, started from their pages and run to the end for real ----


def _wait_ended(stack, experiment_id: str, timeout: float = 420.0) -> comparator_pb2.Experiment:
    from peftlab.v1 import gateway_pb2_grpc
    from service_helpers import wait_for

    stub = gateway_pb2_grpc.GatewayStub(stack.gateway.channel)

    def ended():
        request = comparator_pb2.GetExperimentRequest(experiment_id=experiment_id)
        experiment = stub.GetExperiment(request, timeout=10).experiment
        return experiment if experiment.status != comparator_pb2.EXPERIMENT_STATUS_RUNNING else None

    return wait_for(ended, timeout=timeout, interval=1.0, what=f"experiment {experiment_id} to end")


def _runs(stack, run_ids) -> dict:
    from peftlab.v1 import gateway_pb2_grpc, trainer_pb2

    stub = gateway_pb2_grpc.GatewayStub(stack.gateway.channel)
    return {r: stub.GetRun(trainer_pb2.GetRunRequest(run_id=r), timeout=10).run for r in run_ids}


def test_compare_page_runs_a_comparison_and_shows_its_report(gateway_env):
    at = _page(state.PAGE_COMPARE)
    # The UI stack is shared with the browser test, which may have started a comparison already.
    earlier = [s for s in at.selectbox if s.key == state.COMPARE_SELECT]
    assert earlier or "No comparison yet: start one above." in [i.value for i in at.info]
    at.multiselect(key="compare.methods").set_value(["lora", "full"])
    at.number_input(key="compare.iters").set_value(4)
    at.number_input(key="compare.rank").set_value(4)
    at.number_input(key="compare.seeds").set_value(2)
    at.number_input(key="compare.test_samples").set_value(0)
    at.button(key="FormSubmitter:compare.form-Start comparison").click().run()
    assert not at.exception and not at.error, _errors(at)
    experiment_id = at.session_state[state.COMPARISON_ID]
    assert [b.label for b in at.button if b.key == "compare.cancel"] == ["Cancel comparison"]

    experiment = _wait_ended(gateway_env, experiment_id)
    assert experiment.status == comparator_pb2.EXPERIMENT_STATUS_SUCCEEDED, experiment.error.message
    runs = _runs(gateway_env, experiment.run_ids)
    assert len(runs) == 4 and {r.spec.method for r in runs.values()} == {"lora", "full"}

    at.run()
    assert not at.exception and not at.error, _errors(at)
    assert not [b for b in at.button if b.key == "compare.cancel"]  # ended: nothing to cancel
    # Loss overlay of the 4 runs, bars of time, memory and tokens/s, the Pareto view.
    assert len(at.get("vega_lite_chart")) == 5
    table = at.dataframe[0].value
    assert sorted(table["label"]) == ["full", "lora-r4"] and list(table["runs"]) == [2, 2]
    for i, label in enumerate(table["label"]):
        method = "full" if label == "full" else "lora"
        losses = [r.metrics.best_valid_loss for r in runs.values() if r.spec.method == method]
        mean = sum(losses) / 2
        # The page shows the comparator's mean with its interval, which must be the runs' own numbers.
        shown = table["best valid loss"][i]
        assert shown.startswith(f"{mean:.3g} ["), (label, shown, losses)
    tests = at.dataframe[1].value  # the paired tests across the two seeds
    assert set(tests["metric"]) >= {"best_valid_loss"}


def test_study_page_runs_a_study_then_trains_its_best_configuration(gateway_env):
    at = _page(state.PAGE_STUDY)
    at.multiselect(key="study.methods").set_value(["lora"])
    at.number_input(key="study.iters").set_value(4)
    at.number_input(key="study.n_trials").set_value(3)
    at.number_input(key="study.parallelism").set_value(1)
    at.button(key="FormSubmitter:study.form-Start study").click().run()
    assert not at.exception and not at.error, _errors(at)
    experiment_id = at.session_state[state.STUDY_ID]

    experiment = _wait_ended(gateway_env, experiment_id)
    assert experiment.status == comparator_pb2.EXPERIMENT_STATUS_SUCCEEDED, experiment.error.message
    at.run()
    assert not at.exception and not at.error, _errors(at)
    trials = at.dataframe[0].value
    assert len(trials) == 3 and set(trials["status"]) <= {"COMPLETE", "PRUNED"}
    losses = {
        t.trial_id: t.values["best_valid_loss"] for t in experiment.trials if "best_valid_loss" in t.values
    }
    best = min(losses, key=losses.get)
    assert any(best in m.value and "best_valid_loss" in m.value for m in at.markdown)

    at.button(key="study.train").click().run()
    assert not at.exception, [e.message for e in at.exception]
    run_id = at.session_state[state.RUN_ID]
    run = _runs(gateway_env, [run_id])[run_id]
    trial = next(t for t in experiment.trials if t.trial_id == best)
    assert run.spec.learning_rate == pytest.approx(trial.params["learning_rate"].float_value)
    assert run.spec.rank == trial.params["rank"].int_value
    from ui import client

    client.cancel_run(run_id)  # only its configuration matters here


def test_playground_streams_base_and_adapter(gateway_env, ui_finished_run):
    at = _page(state.PAGE_PLAYGROUND, **{state.PLAYGROUND_RUN: ui_finished_run.id})
    assert at.selectbox(key=state.PLAYGROUND_RUN).value == ui_finished_run.id
    assert any("tiny-llama" in m.value for m in at.markdown)
    next(s for s in at.slider if s.label == "Max tokens").set_value(12)
    at.button(key="FormSubmitter:playground.form-Generate").click().run()
    assert not at.exception and not at.error, _errors(at)
    prompt, base, adapted = at.session_state[state.GENERATIONS]
    assert prompt.startswith("Ana Lima") and base and adapted
    shown = [c.value for c in at.code]
    assert base in shown and adapted in shown


# ---- drawing real comparator messages ----


def _comparison() -> tuple[comparator_pb2.Experiment, comparator_pb2.Report]:
    experiment = comparator_pb2.Experiment(
        id="x-1", kind=comparator_pb2.EXPERIMENT_KIND_COMPARISON, name="methods",
        status=comparator_pb2.EXPERIMENT_STATUS_SUCCEEDED, total_runs=4, finished_runs=4,
        run_ids=["r-a0", "r-a1", "r-b0", "r-b1"],
    )  # fmt: skip
    report = comparator_pb2.Report(experiment_id="x-1", complete=True, markdown="# methods\n")
    report.rows.add(
        label="lora-r8", run_ids=["r-a0", "r-a1"], pareto=True, params={"method": "lora", "rank": "8"},
        mean={"best_valid_loss": 1.2, "wall_seconds": 30.0, "peak_memory_bytes": 2e9, "tokens_per_second": 900.0,
              "task.exact_match": 0.5},
        std={"best_valid_loss": 0.1, "wall_seconds": 2.0, "peak_memory_bytes": 1e8, "tokens_per_second": 30.0,
             "task.exact_match": 0.05},
    )  # fmt: skip
    report.rows.add(
        label="full", run_ids=["r-b0", "r-b1"], pareto=False, params={"method": "full"},
        mean={"best_valid_loss": 1.3, "wall_seconds": 60.0, "peak_memory_bytes": 6e9, "tokens_per_second": 500.0},
        std={"best_valid_loss": 0.2, "wall_seconds": 4.0, "peak_memory_bytes": 1e8, "tokens_per_second": 20.0},
    )  # fmt: skip
    report.rows[1].ci95["best_valid_loss"] = 0.05  # the comparator's own interval wins over std
    report.rows[1].status = "partial"
    report.tests.add(a="lora-r8", b="full", metric="best_valid_loss", test="welch-t", statistic=-0.63,
                     p_value=0.59, effect_size=-0.63)  # fmt: skip
    report.tests.add(a="lora-r8", b="full", metric="wall_seconds", test="paired-t", statistic=-9.0,
                     p_value=0.01, p_adjusted=0.02, significant=True, n=2, mean_difference=-30.0)  # fmt: skip
    report.tests.add(a="lora-r8", b="full", metric="task.exact_match", test="mcnemar-exact", statistic=3,
                     p_value=0.25, p_adjusted=0.25, n=8, mean_difference=0.25, a_only=3, b_only=1)  # fmt: skip
    report.samples.add(label="lora-r8", run_id="r-a0", seed=0, exact=[True, True, False, True])
    report.samples.add(label="lora-r8", run_id="r-a1", seed=1, exact=[True, False, False, True])
    report.samples.add(label="full", run_id="r-b0", seed=0, exact=[False, True, False, True])
    report.samples.add(label="full", run_id="r-b1", seed=1, exact=[False, True, True, False])
    report.failures.add(label="full", run_id="r-b2", code="RESOURCE_EXHAUSTED", message="out of memory")
    report.notes.append("the PyTorch backend is not installed")
    return experiment, report


def _draw_comparison(experiment: bytes, report: bytes, curves: list) -> None:
    from peftlab.v1 import comparator_pb2

    from ui import experiment_views

    experiment_views.comparison(
        comparator_pb2.Experiment.FromString(experiment), comparator_pb2.Report.FromString(report), curves
    )


def test_comparison_draws_curves_bars_table_and_pareto():
    experiment, report = _comparison()
    curves = [{"step": s, "loss": 3.0 / s, "run": f"{label} · {run}"} for s in range(1, 6)
              for label, run in (("lora-r8", "r-a0"), ("full", "r-b0"))]  # fmt: skip
    args = (experiment.SerializeToString(), report.SerializeToString(), curves)
    at = AppTest.from_function(_draw_comparison, args=args, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("vega_lite_chart")) == 5  # loss overlay, time, memory, tokens/s, Pareto
    table = at.dataframe[0].value
    assert list(table["label"]) == ["lora-r8", "full"]
    # Two runs each: mean +- t(0.975, 1) * std / sqrt(2) = 1.2 +- 0.898.
    assert table["best valid loss"][0] == "1.2 [0.302, 2.1]"
    assert table["best valid loss"][1] == "1.3 [1.25, 1.35]"
    assert table["peak memory (GB)"][1].startswith("6 [")
    assert list(table["pareto"]) == ["yes", ""] and list(table["status"]) == ["", "partial"]
    assert table["exact match"][1] == "-"
    failures = at.dataframe[1].value
    assert list(failures["code"]) == ["RESOURCE_EXHAUSTED"] and list(failures["run"]) == ["r-b2"]
    assert at.info[0].value == "the PyTorch backend is not installed"
    tests = at.dataframe[2].value
    assert list(tests["significant"]) == ["", "yes", ""] and tests["p (Holm)"][1] == 0.02
    assert (
        list(tests["test"])[2] == "mcnemar-exact"
        and tests["only a right"][2] == 3
        and tests["only b right"][2] == 1
    )
    # Which test samples each arm gets right: k of the arm's seeds, per sample index.
    samples = at.dataframe[3].value
    assert list(samples["sample"]) == [0, 1, 2, 3]
    assert list(samples["lora-r8"]) == ["2/2", "1/2", "0/2", "2/2"] and list(samples["full"]) == [
        "0/2",
        "2/2",
        "1/2",
        "1/2",
    ]
    # Every column as wide as its longest cell: "1.2 [0.302, 2.1]" is not cut.
    widths = {name: c.get("width") for name, c in json.loads(at.dataframe[0].proto.columns).items()}
    for name in ("best valid loss", "time (s)", "parameters"):
        assert widths[name] >= 8 * max(len(str(v)) for v in [name, *table[name]]), (name, widths)
    assert [b.label for b in at.get("download_button")] == ["Report as Markdown"]


def _draw_study(experiment: bytes) -> None:
    from peftlab.v1 import comparator_pb2

    from ui import experiment_views

    experiment_views.study(comparator_pb2.Experiment.FromString(experiment))


def _study() -> comparator_pb2.Experiment:
    experiment = comparator_pb2.Experiment(
        id="x-2", kind=comparator_pb2.EXPERIMENT_KIND_STUDY, name="lr", total_runs=5, finished_runs=4,
        status=comparator_pb2.EXPERIMENT_STATUS_RUNNING,
    )  # fmt: skip
    experiment.study.base.model = "tiny-llama"
    experiment.study.base.iters = 40
    experiment.study.objectives.add(name="best_valid_loss", direction=optimizer_pb2.StudyObjective.MINIMIZE)
    trials = [
        ("r-1", optimizer_pb2.TRIAL_STATUS_COMPLETE, 1e-3, 8, 2.0),
        ("r-2", optimizer_pb2.TRIAL_STATUS_COMPLETE, 3e-3, 16, 1.5),
        ("r-3", optimizer_pb2.TRIAL_STATUS_PRUNED, 1e-2, 4, 2.5),
        ("r-4", optimizer_pb2.TRIAL_STATUS_FAILED, 5e-2, 4, None),
        ("r-5", optimizer_pb2.TRIAL_STATUS_RUNNING, 2e-3, 8, None),
    ]
    for run_id, status, lr, rank, loss in trials:
        trial = experiment.trials.add(trial_id=run_id, status=status)
        trial.params["learning_rate"].float_value = lr
        trial.params["rank"].int_value = rank
        if loss is not None:
            trial.values["best_valid_loss"] = loss
    return experiment


def test_study_draws_progress_trials_and_the_best_configuration():
    at = AppTest.from_function(
        _draw_study, args=(_study().SerializeToString(),), default_timeout=TIMEOUT
    ).run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("vega_lite_chart")) == 2  # best so far, parallel coordinates
    trials = at.dataframe[0].value
    assert list(trials["status"]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAILED", "RUNNING"]
    assert at.dataframe[0].proto.placeholder == "-"  # a running trial's objective, not "None"
    # The parallel-coordinates axes carry their values: each numeric axis its lowest and highest.
    chart = json.loads(at.get("vega_lite_chart")[1].proto.spec)
    assert len(chart["layer"]) == 2 and chart["layer"][1]["mark"]["type"] == "text"
    assert list(trials["rank"]) == [8, 16, 4, 4, 8]
    assert any("**1.5**" in m.value and "r-2" in m.value for m in at.markdown)
    assert at.json[0].value.replace(" ", "").replace("\n", "") == '{"learning_rate":0.003,"rank":16}'
    assert [b.label for b in at.button] == ["Train this configuration"]


def _draw_unimplemented() -> None:
    import grpc

    from ui import client, experiment_views

    experiment_views.unsupported_or_raise(
        client.GatewayError(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!", "StartStudy")
    )


def test_an_older_comparator_without_an_rpc_reads_as_not_supported():
    at = AppTest.from_function(_draw_unimplemented, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "does not support this (it answered UNIMPLEMENTED)" in at.info[0].value


def test_other_comparator_errors_are_left_to_the_page():
    from ui import client, experiment_views

    error = client.GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "base.rank: must be ...", "StartStudy")
    with pytest.raises(client.GatewayError):
        experiment_views.unsupported_or_raise(error)


def test_compare_page_shows_the_comparison_just_started_not_the_one_viewed_before(gateway_env):
    from services.client import Client

    with Client(gateway_env.gateway.address) as c:
        base = {"model": "tiny-llama", "data": "chat", "warmup_steps": 0, "test_samples": 0}
        older, newer = (
            c.compare(["lora"], base=base, iters=1, name=n) for n in ("viewed before", "just started")
        )
        for experiment in (older, newer):
            c.cancel_experiment(experiment.id)  # only the page's choice matters here
    # The selectbox remembers the one viewed before; the form has just made the new one the page's current.
    at = _page(state.PAGE_COMPARE, **{state.COMPARE_SELECT: older.id, state.COMPARISON_ID: newer.id})
    assert at.selectbox(key=state.COMPARE_SELECT).value == newer.id
    assert any("just started" in m.value for m in at.markdown), [m.value for m in at.markdown]
