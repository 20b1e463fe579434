"""The Python client (services/client) against real servers: a run submitted, watched event by event (and
resumed mid-stream), generated from; each refusal as its own exception type; the token from the environment or
a file; a comparison and a study started, waited on and reported."""

from __future__ import annotations

import pytest
from peftlab.v1 import common_pb2, comparator_pb2
from service_helpers import start_gateway

from services.client import (
    Client,
    FailedPreconditionError,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
    status_value,
)

TINY = {"model": "tiny-llama", "data": "chat", "warmup_steps": 0, "batch_size": 2, "max_seq_length": 64}
TINY |= {"val_batches": 1, "eval_every": 0, "save_every": 0, "test_samples": 0, "rank": 4}


@pytest.fixture
def client(ui_stack):
    with Client(ui_stack.gateway.address, token="") as c:
        yield c


def test_submit_watch_resume_the_stream_and_generate(client):
    run = client.submit(TINY, iters=3, name="client test")
    assert run.name == "client test" and run.spec.iters == 3
    events = list(client.watch(run.id))
    steps = [e.step.step for e in events if e.WhichOneof("payload") == "step"]
    assert steps == [1, 2, 3]
    assert events[-1].status.status == common_pb2.RUN_STATUS_SUCCEEDED
    # Resumable: after any event id, exactly the events that followed it.
    middle = len(events) // 2
    assert [e.id for e in client.watch(run.id, after_event_id=events[middle].id)] == [
        e.id for e in events[middle + 1 :]
    ]
    done = client.get(run.id)
    assert done.status == common_pb2.RUN_STATUS_SUCCEEDED and done.metrics.steps == 3
    assert run.id in [r.id for r in client.runs(["succeeded"], limit=100)]
    pieces = list(client.generate("Ana is 30 and lives in Oslo. Give JSON.", run_id=run.id, max_tokens=4))
    assert pieces and all(isinstance(p, str) for p in pieces)
    files = client.download_adapter(run.id)
    assert "adapters.safetensors" in files and "adapter_config.json" in files


def test_each_refusal_is_its_own_exception(client):
    with pytest.raises(NotFoundError) as missing:
        client.get("r-nope")
    assert missing.value.method == "GetRun" and "r-nope" in missing.value.details
    with pytest.raises(InvalidArgumentError) as bad:
        client.submit(TINY, rank=0, iters=2)
    assert bad.value.field == "spec.rank"
    finished = client.runs(["succeeded"], limit=1)
    if finished:
        with pytest.raises(FailedPreconditionError):
            client.cancel(finished[0].id)
    with pytest.raises(ValueError, match="rnak"):
        client.submit(rnak=8)
    with pytest.raises(ValueError, match="valid: queued, placed, running"):
        status_value("bogus")
    with Client("127.0.0.1:1") as down:
        assert down.healthy() == (False, "UNAVAILABLE")
        with pytest.raises(UnavailableError):
            down.status()


def test_token_from_the_environment_or_a_file(ui_stack, monkeypatch, tmp_path):
    guarded = start_gateway(
        ui_stack.redis_url, ui_stack.prefix, ui_stack.data_root, ui_stack.runs_root, api_token="s3cret"
    )
    try:
        monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
        monkeypatch.delenv("PEFTLAB_API_TOKEN_FILE", raising=False)
        with Client(guarded.address) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.status()
        (tmp_path / "token").write_text("s3cret\n")
        monkeypatch.setenv("PEFTLAB_API_TOKEN_FILE", str(tmp_path / "token"))
        monkeypatch.setenv("PEFTLAB_GATEWAY", guarded.address)
        with Client() as c:
            assert c.healthy()[0] and c.status().services
        monkeypatch.setenv("PEFTLAB_API_TOKEN", "wrong")  # the variable wins over the file
        with Client() as c, pytest.raises(GatewayError) as refused:
            c.status()
        assert isinstance(refused.value, UnauthenticatedError)
    finally:
        guarded.stop()


def test_compare_and_study_then_their_reports(client):
    comparison = client.compare(["lora"], base=TINY, seeds=[0], iters=2, name="client comparison")
    study = client.study(
        {"parameters": [{"name": "learning_rate", "float_range": {"low": 1e-4, "high": 1e-2, "log": True}}]},
        n_trials=1,
        base=TINY,
        iters=2,
        method="lora",
    )
    kinds = {e.WhichOneof("payload") for e in client.watch_experiment(comparison.id)}
    assert {"run_submitted", "run_finished", "status"} <= kinds
    for experiment in (client.experiment(comparison.id), client.wait_experiment(study.id)):
        assert experiment.status == comparator_pb2.EXPERIMENT_STATUS_SUCCEEDED, experiment.error.message
    report = client.report(comparison.id)
    assert [row.label for row in report.rows] == ["lora"] and report.markdown.startswith("# Comparison")
    assert [row.label for row in client.report(study.id).rows] == ["trial 0"]
    assert {comparison.id, study.id} <= {e.id for e in client.experiments(50)}
