"""Each page of the Streamlit UI run headless with AppTest against real services (optimizer, trainer and
gateway on loopback with real Redis; the tiny model): what it shows, what its buttons do, and that gateway
errors (down, wrong token, refused requests, a comparator that cannot be reached) come out as messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from peftlab.v1 import common_pb2, comparator_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway, wait_for
from streamlit.testing.v1 import AppTest

from ui import state

pytestmark = pytest.mark.usefixtures("keep_main_module")
APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
TIMEOUT = 60


@pytest.fixture
def gateway_env(ui_stack, monkeypatch):
    monkeypatch.setenv("PEFTLAB_GATEWAY", ui_stack.gateway.address)
    monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
    from ui import client

    client.refresh()
    return ui_stack


def _app(page: str | None = None, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [s.value for s in at.success] + [c.value for c in at.caption]
    parts += [str(m.value) for m in at.metric] + [str(m.label) for m in at.metric]
    return "\n".join(str(p) for p in parts)


# ---- home, the banner, the token ----


def test_home_shows_services_trainers_and_runs(gateway_env, ui_finished_run):
    at = _app()
    text = _texts(at)
    for service in ("gateway", "redis", "optimizer", "comparator"):
        assert f"**{service}**" in text
    trainer = gateway_env.trainer.core
    assert trainer.id in text and "CPU cores" in text and "memory" in text
    runs = at.dataframe[0].value
    # The newest runs, as the gateway lists them (the stack is shared: earlier tests' runs may push the
    # fixture's run off the page).
    stub = gateway_pb2_grpc.GatewayStub(gateway_env.gateway.channel)
    listed = stub.ListRuns(trainer_pb2.ListRunsRequest(page_size=len(runs)), timeout=10).runs
    assert ui_finished_run.id in [r.id for r in stub.ListRuns(trainer_pb2.ListRunsRequest(), timeout=10).runs]
    assert list(runs["run"]) == [r.id for r in listed]
    assert not at.error, [e.value for e in at.error]
    # Recent experiments: the comparator's newest five (other UI tests' comparisons and studies, or none).
    recent = stub.ListExperiments(comparator_pb2.ListExperimentsRequest(page_size=5), timeout=10).experiments
    if recent:
        assert all(f"**{e.id}**" in text for e in recent)
    else:
        assert "No comparisons or studies yet" in text


def test_default_fine_tuning_button_reports_refusals_in_words(gateway_env):
    at = _app()
    at.button[0].click().run()  # the stack's data root has no "default" dataset: the gateway refuses
    assert not at.exception
    assert any("spec.data" in e.value and "default" in e.value for e in at.error), [e.value for e in at.error]


def test_gateway_down_shows_a_banner_and_a_retry(monkeypatch):
    monkeypatch.setenv("PEFTLAB_GATEWAY", "127.0.0.1:1")
    for page in (None, state.PAGE_RUN, state.PAGE_COMPARE):
        at = _app(page)
        assert "is not reachable" in at.error[0].value
        assert [b.label for b in at.button] == ["Retry"]
        at.button[0].click().run()
        assert not at.exception and "is not reachable" in at.error[0].value


def test_api_token(ui_stack, monkeypatch):
    guarded = start_gateway(
        ui_stack.gateway.core.config.redis_url,
        ui_stack.gateway.core.config.redis_prefix,
        ui_stack.data_root,
        ui_stack.runs_root,
        api_token="t0ken",
    )
    try:
        from ui import client

        monkeypatch.setenv("PEFTLAB_GATEWAY", guarded.address)
        monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
        at = _app()
        assert any("needs an API token" in e.value for e in at.error)
        monkeypatch.setenv("PEFTLAB_API_TOKEN", "wrong")
        client.refresh()
        at = _app()
        assert any("refused the API token" in e.value for e in at.error)
        monkeypatch.setenv("PEFTLAB_API_TOKEN", "t0ken")
        client.refresh()
        at = _app()
        assert not at.error[:1] or "Listing experiments" in at.error[0].value
        assert ui_stack.trainer.core.id in _texts(at)
    finally:
        guarded.stop()


# ---- new run ----


def _new_run(**session) -> AppTest:
    at = _app(state.PAGE_NEW_RUN, **session)
    at.selectbox(key=state.NEW_RUN_MODEL).set_value("tiny-llama").run()
    at.selectbox(key=state.NEW_RUN_DATASET).set_value("chat").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_new_run_previews_the_dataset_and_predicts_memory(gateway_env):
    at = _new_run()
    assert any("Every line checks out" in s.value for s in at.success)
    preview = at.dataframe[0].value
    assert list(preview["line"])[:3] == [1, 2, 3]
    assert (preview["total tokens"] == preview["prompt tokens"] + preview["completion tokens"]).all()
    assert (preview["completion tokens"] > 0).all()
    text = _texts(at)
    assert "predicted peak memory" in text and "machine memory" in text
    peak_manual = next(m.value for m in at.metric if m.label == "predicted peak memory")
    at.number_input(key=state.NEW_RUN_BATCH).set_value(64).run()
    assert next(m.value for m in at.metric if m.label == "predicted peak memory") != peak_manual

    at.toggle(key=state.NEW_RUN_BATCH_AUTO).set_value(True).run()
    assert not at.exception
    auto = next(m.value for m in at.markdown if m.value.startswith("Auto: batch size"))
    assert "x accumulation" in auto
    spec = json.loads(at.get("code")[-1].value)
    # Submitted as auto: the trainer picks the micro-batch on the machine the run lands on.
    assert spec["batch_size"] == 0 and spec["effective_batch_size"] == 8


def test_new_run_shows_dataset_problems_by_line(gateway_env):
    bad = gateway_env.data_root / "broken"
    bad.mkdir(exist_ok=True)
    good = (gateway_env.data_root / "chat" / "train.jsonl").read_text().splitlines()
    (bad / "train.jsonl").write_text("\n".join([good[0], "{not json", good[1], '{"text": 3}']) + "\n")
    (bad / "valid.jsonl").write_text(good[2] + "\n")
    from ui import client

    client.refresh()
    try:
        at = _app(state.PAGE_NEW_RUN)
        at.selectbox(key=state.NEW_RUN_DATASET).set_value("broken").run()
        assert any("problem(s) found" in e.value for e in at.error)
        problems = at.dataframe[0].value
        assert list(problems["line"]) == [2, 4] and set(problems["file"]) == {"train.jsonl"}
    finally:
        # The data root is shared with later UI tests: a dataset named "broken" sorts first and would become
        # the Compare/Study pages' default choice.
        shutil.rmtree(bad)
        client.refresh()


def test_new_run_maps_columns_for_the_checks_the_preview_and_the_spec(gateway_env):
    """Rows with their own column names fail the checks until the mapping names them; then the gateway's
    checks and preview read them as the engine will (a system turn, a prompt, an answer), and the spec
    carries the mapping."""
    mapped = gateway_env.data_root / "qa-mapped"
    mapped.mkdir(exist_ok=True)
    for split, n in (("train", 4), ("valid", 2)):
        rows = [
            {"question": f"What is {i} + {i}?", "answer": str(2 * i), "persona": "a terse tutor"}
            for i in range(n)
        ]
        (mapped / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from ui import client

    client.refresh()
    try:
        at = _app(state.PAGE_NEW_RUN)
        at.selectbox(key=state.NEW_RUN_MODEL).set_value("tiny-llama").run()
        at.selectbox(key=state.NEW_RUN_DATASET).set_value("qa-mapped").run()
        assert any("problem(s) found" in e.value for e in at.error)
        for name, column in (
            ("prompt_field", "question"),
            ("completion_field", "answer"),
            ("system_field", "persona"),
        ):
            at.text_input(key=f"new_run.{name}").set_value(column)
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert any("Every line checks out" in s.value for s in at.success), [e.value for e in at.error]
        preview = at.dataframe[0].value
        first = json.loads(preview["row"][0])
        assert first == {"messages": [
            {"role": "system", "content": "a terse tutor"},
            {"role": "user", "content": "What is 0 + 0?"},
            {"role": "assistant", "content": "0"},
        ]}  # fmt: skip
        assert list(preview["format"]) == ["chat"] * 4 and (preview["completion tokens"] > 0).all()
        spec = json.loads(at.get("code")[-1].value)
        assert (spec["prompt_field"], spec["completion_field"], spec["system_field"]) == (
            "question",
            "answer",
            "persona",
        )
        assert "messages_field" not in spec
    finally:
        shutil.rmtree(mapped)  # the data root is shared with later UI tests
        client.refresh()


def test_new_run_form_checks_before_submitting(gateway_env):
    at = _new_run()
    at.number_input(key=state.NEW_RUN_ITERS).set_value(3).run()
    at.number_input(key=state.NEW_RUN_ITERS).set_value(3)
    warmup = next(n for n in at.number_input if n.label == "Warmup steps")
    warmup.set_value(5).run()
    assert any("Warmup steps must be fewer" in w.value for w in at.warning)
    assert at.button(key="new_run.start").disabled
    at.toggle(key=state.NEW_RUN_RANK_AUTO).set_value(True).run()
    assert any("run the rank probe first" in w.value for w in at.warning)


def test_new_run_starts_a_run_and_the_run_page_cancels_it(gateway_env, ui_finished_run):
    at = _new_run()
    at.number_input(key=state.NEW_RUN_ITERS).set_value(400).run()
    for label, value in (
        ("Test samples scored", 0),
        ("Validate every (steps)", 0),
        ("Max sequence length", 64),
    ):
        next(n for n in at.number_input if n.label == label).set_value(value)
    at.text_input(key=state.NEW_RUN_NAME).set_value("started from the UI").run()
    at.button(key="new_run.start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    run_id = at.session_state[state.RUN_ID]
    stub = gateway_pb2_grpc.GatewayStub(gateway_env.gateway.channel)
    run = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10).run
    assert run.name == "started from the UI" and run.spec.model == "tiny-llama" and run.spec.iters == 400
    assert run.spec.data == "chat" and run.spec.method == "lora"
    # The switch landed on the Run page, which follows the run and can cancel it.
    assert any(run_id in m.value for m in at.markdown) or at.selectbox(key=state.RUN_SELECT).value == run_id
    at.switch_page(state.PAGE_RUN).run()  # AppTest stays on a page only when it switched there itself
    at.button(key="run.cancel").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    def cancelled():
        run = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10).run
        return run.status == common_pb2.RUN_STATUS_CANCELLED

    wait_for(cancelled, timeout=120, what="the cancelled run")
    from ui import client

    client.refresh()
    at.run()
    assert [b.label for b in at.button if b.key == "run.resume"] == ["Resume"]


# ---- run ----


def test_run_page_shows_a_finished_run(gateway_env, ui_finished_run):
    at = _app(state.PAGE_RUN, **{state.RUN_ID: ui_finished_run.id})
    text = _texts(at)
    assert "SUCCEEDED" in text and "best valid loss" in text and "exact match" in text
    step = next(m.value for m in at.metric if m.label == "step")
    assert step == "8/8"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 4
    feed = at.session_state[state.RUN_FEEDS][ui_finished_run.id]
    assert [r["step"] for r in feed.steps] == list(range(1, 9))
    assert [r["step"] for r in feed.evals] == [0, 4, 8]
    assert any("finished: succeeded" in line for line in feed.logs)

    at.button(key="run.download.adapter").click().run()
    assert not at.exception
    assert any(b.label == "Save adapter (.zip)" for b in at.get("download_button"))
    archive = at.session_state[state.ADAPTER_ZIPS][(ui_finished_run.id, "adapter")]
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert sorted(names) == [
        f"{ui_finished_run.id}/adapter_config.json",
        f"{ui_finished_run.id}/adapters.safetensors",
    ]
    at.button(key="run.download.gguf").click().run()  # exported on first request, then served
    assert not at.exception
    assert any(b.label == "Save GGUF (.zip)" for b in at.get("download_button"))
    gguf = zipfile.ZipFile(io.BytesIO(at.session_state[state.ADAPTER_ZIPS][(ui_finished_run.id, "gguf")]))
    assert sorted(gguf.namelist()) == [f"{ui_finished_run.id}/Modelfile", f"{ui_finished_run.id}/model.gguf"]
    assert gguf.read(f"{ui_finished_run.id}/model.gguf")[:4] == b"GGUF"
    at.button(key="run.download.fused").click().run()
    assert not at.exception
    fused = zipfile.ZipFile(io.BytesIO(at.session_state[state.ADAPTER_ZIPS][(ui_finished_run.id, "fused")]))
    assert f"{ui_finished_run.id}/fused/config.json" in fused.namelist()

    at.selectbox(key="evaluate.split").set_value("valid")
    at.number_input(key="evaluate.batches").set_value(1)
    at.button(key="FormSubmitter:evaluate-Evaluate").click().run()
    assert not at.exception
    result = at.dataframe[-1].value
    assert list(result["split"]) == ["valid"] and result["loss"][0] > 0


def test_run_page_unknown_run_reads_as_a_message(gateway_env):
    at = _app(state.PAGE_RUN, **{state.RUN_ID: "r-nope"})
    assert any("r-nope" in e.value for e in at.error)


def test_auto_rank_applies_the_optimizers_answer_for_a_finished_probe(gateway_env, ui_finished_run):
    # The fixture run stands in for the probe (a 30-step probe would cost this suite half a minute).
    at = _new_run(**{state.PROBE_RUN_ID: ui_finished_run.id})
    at.toggle(key=state.NEW_RUN_RANK_AUTO).set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    advice = next(s.value for s in at.success if s.value.startswith("Recommended rank"))
    rank = int(advice.split("**")[1])
    spec = json.loads(at.get("code")[-1].value)
    assert spec["rank"] == rank and spec["alpha"] == 2.0 * rank
    assert not at.button(key="new_run.start").disabled
    assert any(e.label == "Why this rank" for e in at.expander)
