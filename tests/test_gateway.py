"""The gateway on a loopback port with real Redis (and a real trainer or comparator where a test needs one):
auth, validation (each bad input gets its status code and nothing is written), queueing, models, datasets,
trainers, status, experiments forwarded to the comparator, and the placement rule."""

from __future__ import annotations

import dataclasses
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2
from peftlab.v1 import common_pb2, comparator_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import health_status, reflected_services, start_gateway, start_trainer, wait_for

from services.common.codec import spec_to_proto
from services.common.config import load_config
from services.common.interceptors import FIELD_KEY
from services.common.memory import predict_for_model, spec_dtype_bytes
from services.common.records import RunRecord, TrainerRecord
from services.common.runs_root import ID_FILE, runs_root_id
from services.common.spec import RunSpec
from services.comparator.config import ComparatorConfig
from services.comparator.server import make_server as make_comparator
from services.gateway.placement import choose_trainer, may_wait_for_a_trainer, waiting_reason
from services.gateway.preflight import predict_peaks

TOKEN = "s3cret-token"
GIB = 2**30


@pytest.fixture
def roots(chat_data, tmp_path):
    return chat_data.parent, tmp_path / "runs"


@pytest.fixture
def gateway(redis_url, redis_prefix, roots):
    running = start_gateway(redis_url, redis_prefix, *roots)
    yield running
    running.stop()


@pytest.fixture
def stub(gateway):
    return gateway_pb2_grpc.GatewayStub(gateway.channel)


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _field(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get(FIELD_KEY, "")


def _submit(stub, chat_data, **fields) -> gateway_pb2.SubmitRunRequest:
    spec = spec_to_proto(
        {"model": "tiny-llama", "data": chat_data.name, "iters": 2, "warmup_steps": 0, **fields}
    )
    return gateway_pb2.SubmitRunRequest(spec=spec)


# ---- health, reflection, auth ----


def test_health_and_reflection(gateway):
    assert health_status(gateway.address) == health_pb2.HealthCheckResponse.SERVING
    assert "peftlab.v1.Gateway" in reflected_services(gateway.address)


def test_bearer_token_guards_every_call_but_health(redis_url, redis_prefix, roots):
    running = start_gateway(redis_url, redis_prefix, *roots, api_token=TOKEN)
    try:
        stub = gateway_pb2_grpc.GatewayStub(running.channel)
        request = trainer_pb2.ListRunsRequest()
        assert _error(lambda: stub.ListRuns(request, timeout=5)).code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer nope"),)
        assert (
            _error(lambda: stub.ListRuns(request, timeout=5, metadata=wrong)).code()
            == grpc.StatusCode.UNAUTHENTICATED
        )
        watch = _error(lambda: list(stub.WatchRun(trainer_pb2.WatchRunRequest(run_id="x"), timeout=5)))
        assert watch.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _error(lambda: reflected_services(running.address)).code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.ListRuns(request, timeout=5, metadata=good).runs == []
        assert "peftlab.v1.Gateway" in reflected_services(running.address, good)
        assert health_status(running.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop()


# ---- validation: the code, the field, and nothing written ----


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"spec": {"rank": 0}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.rank"),
        ({"spec": {"dropout": 1.5}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.dropout"),
        ({"spec": {"warmup_steps": 50}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.warmup_steps"),
        ({"spec": {"model": "../../etc/passwd"}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.model"),
        ({"spec": {"data": "../../etc/passwd"}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.data"),
        ({"spec": {"data": "/etc"}}, grpc.StatusCode.INVALID_ARGUMENT, "spec.data"),
        ({"spec": {"model": "missing-model"}}, grpc.StatusCode.NOT_FOUND, "spec.model"),
        ({"spec": {"data": "missing-data"}}, grpc.StatusCode.NOT_FOUND, "spec.data"),
        ({"name": "x" * 201}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"placement": {"device": "tpu"}}, grpc.StatusCode.INVALID_ARGUMENT, "placement.device"),
        ({"labels": {"": "v"}}, grpc.StatusCode.INVALID_ARGUMENT, "labels"),
        ({"experiment_id": "../x"}, grpc.StatusCode.INVALID_ARGUMENT, "experiment_id"),
    ],
)
def test_bad_submissions_get_their_code_and_write_nothing(stub, store, chat_data, change, code, field):
    request = _submit(stub, chat_data, **change.get("spec", {}))
    if "name" in change:
        request.name = change["name"]
    if "placement" in change:
        request.placement.device = change["placement"]["device"]
    if "labels" in change:
        request.labels.update(change["labels"])
    if "experiment_id" in change:
        request.experiment_id = change["experiment_id"]
    error = _error(lambda: stub.SubmitRun(request, timeout=10))
    assert error.code() == code, error.details()
    assert _field(error) == field and error.details().startswith(field)
    assert list(store.r.scan_iter(f"{store.prefix}*")) == []


def test_other_bad_inputs(stub):
    cases = [
        (
            lambda: stub.GetRun(trainer_pb2.GetRunRequest(run_id="nope"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "run_id",
        ),
        (
            lambda: stub.GetRun(trainer_pb2.GetRunRequest(run_id="a/b"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "run_id",
        ),
        (
            lambda: stub.CancelRun(trainer_pb2.CancelRunRequest(run_id="nope"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "run_id",
        ),
        (
            lambda: stub.ResumeRun(trainer_pb2.ResumeRunRequest(run_id="nope"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "run_id",
        ),
        (
            lambda: list(stub.WatchRun(trainer_pb2.WatchRunRequest(run_id="nope"), timeout=5)),
            grpc.StatusCode.NOT_FOUND,
            "run_id",
        ),
        (
            lambda: stub.ListRuns(trainer_pb2.ListRunsRequest(statuses=[42]), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "statuses",
        ),
        (
            lambda: list(
                stub.Generate(trainer_pb2.GenerateRequest(model="../../etc/passwd", prompt="hi"), timeout=5)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model",
        ),
        (
            lambda: list(
                stub.Generate(
                    trainer_pb2.GenerateRequest(model="tiny-llama", prompt="hi", temperature=5), timeout=5
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "temperature",
        ),
        (
            lambda: stub.ValidateDataset(gateway_pb2.ValidateDatasetRequest(path="../../etc"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "path",
        ),
        (
            lambda: stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(path="/etc/passwd"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "path",
        ),
        (
            lambda: stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(path="nope"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "path",
        ),
    ]
    for call, code, field in cases:
        error = _error(call)
        assert (error.code(), _field(error)) == (code, field), error.details()


# ---- queueing without trainers ----


def test_runs_queue_until_a_trainer_comes_and_queued_runs_cancel_at_once(stub, store, chat_data):
    run = stub.SubmitRun(_submit(stub, chat_data), timeout=10).run
    assert run.status == common_pb2.RUN_STATUS_QUEUED and run.trainer_id == ""
    assert run.owner == "anonymous"  # no tokens: one user, who may cancel it
    assert run.spec.model == "tiny-llama" and not run.spec.HasField("rank")  # recorded as submitted
    queued = stub.ListRuns(trainer_pb2.ListRunsRequest(statuses=[common_pb2.RUN_STATUS_QUEUED]), timeout=5)
    assert [r.id for r in queued.runs] == [run.id]
    cancelled = stub.CancelRun(
        trainer_pb2.CancelRunRequest(run_id=run.id, reason="changed my mind"), timeout=5
    ).run
    assert cancelled.status == common_pb2.RUN_STATUS_CANCELLED
    assert store.queued() == []
    events = [r.event for r in stub.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.id), timeout=10)]
    assert [e.status.status for e in events] == [
        common_pb2.RUN_STATUS_QUEUED,
        common_pb2.RUN_STATUS_CANCELLED,
    ]
    assert events[-1].status.reason == "changed my mind"
    again = _error(lambda: stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=5))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


def _placements(store, run_id: str) -> list[str]:
    """The trainers a run was placed on, in order (its PLACED status events)."""
    return [
        e.data["trainer_id"]
        for e in store.read_events(run_id, "")
        if e.kind == "status" and e.data["status"] == "PLACED"
    ]


def test_a_run_waits_for_a_trainer_with_its_memory_and_get_run_says_why(stub, store, chat_data):
    """A mixed pool (registry entries whose addresses answer nothing): a 1 MiB trainer with free slots and a
    64 GiB one that is full. The run passes SubmitRun (the big one fits it), is never placed on the small one,
    GetRun says why it waits, and it goes to the big one when its slot frees; allow_over_memory lifts the bound."""
    cpu = {"device_kind": "cpu", "total_memory_bytes": 2**20}
    store.register_trainer(TrainerRecord("small", "127.0.0.1:1", slots=4, hardware=cpu), 600)
    big = {**cpu, "total_memory_bytes": 64 * GIB}
    store.register_trainer(TrainerRecord("big", "127.0.0.1:1", slots=1, hardware=big), 600)
    store.create_run(RunRecord(id="busy"), claim="big")

    run = stub.SubmitRun(
        _submit(stub, chat_data), timeout=30
    ).run  # SubmitRun has had it placed, if it can be
    peak = store.get_run(run.id).predicted_peak_bytes["cpu"]
    assert 2**20 < peak < 64 * GIB
    got = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run.id), timeout=5).run
    assert got.status == common_pb2.RUN_STATUS_QUEUED and _placements(store, run.id) == []
    assert got.waiting == (
        f"waiting for a free slot on a trainer with at least {peak / GIB:.1f} GiB: its predicted peak memory; "
        "the largest free one, small, has 0.0 GiB"
    )

    over = stub.SubmitRun(_submit(stub, chat_data, allow_over_memory=True), timeout=30).run
    wait_for(lambda: "small" in _placements(store, over.id), 30, what="the allow_over_memory run on small")
    assert stub.GetRun(trainer_pb2.GetRunRequest(run_id=over.id), timeout=5).run.waiting == ""

    store.transition("busy", "CANCELLED", release=True)
    wait_for(lambda: _placements(store, run.id), 30, what="the run placed once the big trainer frees")
    assert set(_placements(store, run.id)) == {"big"}


# ---- models, datasets, trainers, status ----


def test_models_and_datasets(stub, chat_data):
    models = stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=5)
    tiny = next(m for m in models.models if m.name == "tiny-llama")
    assert tiny.model_type == "llama" and tiny.num_layers > 0 and tiny.size_bytes > 0 and tiny.chat_template
    datasets = stub.ListDatasets(gateway_pb2.ListDatasetsRequest(), timeout=5)
    mine = next(d for d in datasets.datasets if d.name == chat_data.name)
    assert mine.format == "chat" and {s.split: s.rows for s in mine.splits} == {
        "train": 48,
        "valid": 12,
        "test": 6,
    }

    ok = stub.ValidateDataset(gateway_pb2.ValidateDatasetRequest(path=chat_data.name), timeout=10)
    assert ok.valid and not ok.problems

    preview = stub.PreviewDataset(
        gateway_pb2.PreviewDatasetRequest(path=chat_data.name, split="valid", rows=3, model="tiny-llama"),
        timeout=60,
    )
    assert len(preview.rows) == 3 and preview.total_rows == 12 and preview.model == "tiny-llama"
    for row in preview.rows:
        assert row.format == "chat" and row.prompt_tokens > 0 and row.completion_tokens > 0
        assert row.total_tokens == row.prompt_tokens + row.completion_tokens
        assert "messages" in json.loads(row.json)


def test_validate_dataset_names_file_and_line(stub, chat_data):
    broken = chat_data.parent / "broken"
    broken.mkdir()
    good = (chat_data / "train.jsonl").read_text().splitlines()
    lines = [good[0], "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]}), good[1]]
    (broken / "train.jsonl").write_text("\n".join(lines) + "\n")
    reply = stub.ValidateDataset(gateway_pb2.ValidateDatasetRequest(path="broken"), timeout=10)
    assert not reply.valid
    found = [(p.file.rsplit("/", 1)[-1], p.line) for p in reply.problems]
    assert found == [("valid.jsonl", 0), ("train.jsonl", 2), ("train.jsonl", 3)]
    assert "invalid JSON" in reply.problems[1].problem and "assistant" in reply.problems[2].problem


def test_trainers_hardware_and_status(redis_url, redis_prefix, roots, stub):
    trainer = start_trainer(redis_url, redis_prefix, *roots, slots=2, trainer_id="tr-1")
    try:
        trainers = stub.ListTrainers(gateway_pb2.ListTrainersRequest(), timeout=5).trainers
        assert [(t.id, t.slots, t.busy_slots, t.address) for t in trainers] == [
            ("tr-1", 2, 0, trainer.address)
        ]
        assert trainers[0].last_heartbeat.seconds > 0 and trainers[0].hardware.device_kind
        hardware = stub.ListHardware(gateway_pb2.ListHardwareRequest(), timeout=5).hardware
        assert [h.trainer_id for h in hardware] == ["tr-1"] and hardware[0].hardware.total_memory_bytes > 0
        status = stub.GetStatus(gateway_pb2.GetStatusRequest(), timeout=10)
        health = {s.name: s.healthy for s in status.services}
        assert health == {"gateway": True, "redis": True, "comparator": False, "optimizer": False}
        assert [t.id for t in status.trainers] == ["tr-1"]
    finally:
        trainer.stop()


# ---- experiments go to the comparator ----


def test_experiments_are_checked_then_forwarded(redis_url, redis_prefix, roots, chat_data):
    config = load_config(ComparatorConfig, env={}, port=0, redis_url=redis_url, redis_prefix=redis_prefix)
    comparator, _ = make_comparator(config)  # its core is not started: nothing drives the experiment
    comparator.start()
    running = start_gateway(
        redis_url, redis_prefix, *roots, comparator_address=f"127.0.0.1:{comparator.port}"
    )
    try:
        stub = gateway_pb2_grpc.GatewayStub(running.channel)
        base = spec_to_proto({"model": "tiny-llama", "data": chat_data.name})
        arms = [comparator_pb2.ComparisonArm(name="lora", overrides=spec_to_proto({"method": "lora"}))]
        request = comparator_pb2.StartComparisonRequest(base=base, arms=arms)
        experiment = stub.StartComparison(request, timeout=5).experiment
        assert experiment.id.startswith("x-") and experiment.total_runs == 1
        bad_arm = comparator_pb2.ComparisonArm(name="bad", overrides=spec_to_proto({"rank": 0}))
        bad = _error(
            lambda: stub.StartComparison(
                comparator_pb2.StartComparisonRequest(base=base, arms=[bad_arm]), timeout=5
            )
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(bad) == "arms[0].overrides.rank"
        study = comparator_pb2.StartStudyRequest(base=base, n_trials=0)
        assert _field(_error(lambda: stub.StartStudy(study, timeout=5))) == "n_trials"
        get = comparator_pb2.GetExperimentRequest(experiment_id="x-1")
        assert _error(lambda: stub.GetExperiment(get, timeout=5)).code() == grpc.StatusCode.NOT_FOUND
        watch = comparator_pb2.WatchExperimentRequest(experiment_id="x-1")
        assert (
            _error(lambda: list(stub.WatchExperiment(watch, timeout=5))).code() == grpc.StatusCode.NOT_FOUND
        )
        assert health_status(f"127.0.0.1:{comparator.port}") == health_pb2.HealthCheckResponse.SERVING
        assert "peftlab.v1.Comparator" in reflected_services(f"127.0.0.1:{comparator.port}")
    finally:
        running.stop()
        comparator.stop(0)


# ---- the placement rule (pure) ----


def _t(
    trainer_id: str, kind: str = "cpu", slots: int = 1, busy: int = 0, memory: int = 16 * 10**9
) -> TrainerRecord:
    return TrainerRecord(
        id=trainer_id,
        address="x",
        slots=slots,
        hardware={"device_kind": kind, "available_memory_bytes": memory},
        run_ids=[f"r{i}" for i in range(busy)],
        runs_root="/runs",
    )


def test_choose_trainer():
    run = RunRecord(id="r")
    assert choose_trainer([], run) is None
    assert choose_trainer([_t("a", busy=1)], run) is None
    assert choose_trainer([_t("a", slots=2, busy=1), _t("b", slots=2)], run).id == "b"  # spread the load
    gpu = RunRecord(id="r", placement={"device": "gpu"})
    assert choose_trainer([_t("a"), _t("m", kind="apple")], gpu).id == "m"
    assert choose_trainer([_t("a")], gpu).id == "a"  # a preference, not a rule
    strict = RunRecord(id="r", placement={"device": "cuda", "strict": True})
    assert choose_trainer([_t("a"), _t("m", kind="apple")], strict) is None
    pinned = RunRecord(id="r", placement={"trainer_id": "b"})
    assert choose_trainer([_t("a"), _t("b", busy=0)], pinned).id == "b"
    big = RunRecord(id="r", spec={"memory_budget_gb": 20})
    assert choose_trainer([_t("a", memory=8 * 10**9), _t("b", memory=64 * 10**9)], big).id == "b"
    resume = RunRecord(id="r", status="RESUMING", previous_trainer="b", run_dir="/runs/r")
    assert choose_trainer([_t("a"), _t("b")], resume).id == "b"
    elsewhere = RunRecord(id="r", status="RESUMING", previous_trainer="b", run_dir="/other/r")
    assert choose_trainer([_t("a"), _t("b")], elsewhere) is None


def test_resume_goes_by_the_runs_root_id_not_the_path():
    """Per-machine roots at one path look shared by path; their id files tell them apart."""
    own, shared = (dataclasses.replace(_t(name), runs_root_id=f"id-{name}") for name in ("a", "b"))
    run = RunRecord(id="r", status="RESUMING", previous_trainer="a", run_dir="/runs/r", runs_root_id="id-a")
    assert choose_trainer([shared], run) is None
    assert waiting_reason(run, [shared]).startswith("waiting for trainer a (its runs root is not shared)")
    assert choose_trainer([shared, own], run).id == "a" and waiting_reason(run, [shared, own]) == ""
    mounted = dataclasses.replace(shared, runs_root="/mnt/elsewhere", runs_root_id="id-a")
    assert choose_trainer([mounted], run).id == "b"  # the same storage at another path holds it
    legacy = dataclasses.replace(run, runs_root_id="")  # a record from before the ids: the path decides
    assert choose_trainer([shared], legacy).id == "b"
    assert waiting_reason(dataclasses.replace(run, status="RUNNING", trainer="a"), []) == ""


def _sized(trainer_id: str, total: float, kind: str = "cpu", slots: int = 1, busy: int = 0) -> TrainerRecord:
    trainer = _t(trainer_id, kind=kind, slots=slots, busy=busy)
    trainer.hardware["total_memory_bytes"] = int(total)
    return trainer


def test_a_run_goes_only_to_trainers_with_the_memory_of_its_predicted_peak():
    """A 16 GiB MacBook and a 128 GiB Studio: a run predicted at 40 GiB goes to the Studio, even when the
    MacBook has more free slots (it would fail there), and waits when only the MacBook is free."""
    macbook, studio = _sized("macbook", 16 * GIB, slots=4), _sized("studio", 128 * GIB)
    run = RunRecord(id="r", predicted_peak_bytes={"cpu": 40 * GIB, "gpu": 30 * GIB})
    assert choose_trainer([macbook, studio], run) is studio
    assert choose_trainer([macbook], run) is None
    assert choose_trainer([macbook, _sized("studio", 128 * GIB, busy=1)], run) is None
    # The prediction of the trainer's kind of device applies: 30 GiB (bf16 on a GPU) fits 32, 40 (cpu) does not.
    assert choose_trainer([macbook, _sized("m", 32 * GIB, kind="apple")], run).id == "m"
    assert choose_trainer([macbook, _sized("m", 32 * GIB, kind="cpu")], run) is None
    # A pinned trainer too small for it is passed over like any other.
    pinned = dataclasses.replace(run, placement={"trainer_id": "macbook"})
    assert choose_trainer([macbook, studio], pinned) is studio
    # allow_over_memory lifts it; records from before the prediction (and a trainer that reports no memory
    # size) place as before: the most free slots.
    over = dataclasses.replace(run, spec={"allow_over_memory": True})
    assert choose_trainer([macbook, studio], over) is macbook
    assert choose_trainer([macbook, studio], dataclasses.replace(run, predicted_peak_bytes={})) is macbook
    assert choose_trainer([_t("unsized", slots=4), studio], run).id == "unsized"
    # A resume has the same bound, even on the trainer it ran on; so has a data-parallel run (its
    # prediction counts all its workers' processes on one trainer).
    resume = dataclasses.replace(run, status="RESUMING", previous_trainer="macbook", run_dir="/runs/r")
    assert choose_trainer([macbook, studio], resume) is studio
    parallel = dataclasses.replace(run, spec={"workers": 2})
    assert choose_trainer([macbook, _sized("studio", 128 * GIB, slots=2)], parallel).id == "studio"


def test_waiting_reason_names_the_memory_a_queued_run_waits_for():
    run = RunRecord(id="r", predicted_peak_bytes={"cpu": int(40.2 * GIB), "gpu": 30 * GIB})
    macbook, busy_studio = _sized("macbook", 16 * GIB, slots=2), _sized("studio", 128 * GIB, busy=1)
    assert waiting_reason(run, [macbook]).startswith(
        "waiting for a trainer with at least 40.2 GiB: its predicted peak memory; the largest live one, "
        "macbook, has 16.0 GiB"
    )
    assert waiting_reason(run, [macbook, busy_studio]) == (
        "waiting for a free slot on a trainer with at least 40.2 GiB: its predicted peak memory; the largest "
        "free one, macbook, has 16.0 GiB"
    )
    mixed = [macbook, _sized("mini", 24 * GIB, kind="apple")]
    assert "at least 40.2 GiB on a cpu trainer / 30.0 GiB on a gpu trainer" in waiting_reason(run, mixed)
    assert waiting_reason(run, [busy_studio]) == ""  # it only waits for a free slot
    assert waiting_reason(run, [macbook, _sized("studio", 128 * GIB)]) == ""  # it is about to be placed
    assert waiting_reason(run, []) == ""
    assert waiting_reason(dataclasses.replace(run, spec={"allow_over_memory": True}), [macbook]) == ""
    assert waiting_reason(dataclasses.replace(run, predicted_peak_bytes={}), [macbook]) == ""
    assert waiting_reason(dataclasses.replace(run, status="PLACED", trainer="macbook"), [macbook]) == ""
    resume = dataclasses.replace(run, status="RESUMING", run_dir="/runs/r")
    assert "at least 40.2 GiB" in waiting_reason(resume, [macbook])
    # GetRun reads the registry only for runs that may wait on a trainer's size, slots or runs root.
    assert may_wait_for_a_trainer(run) and may_wait_for_a_trainer(resume)
    assert not may_wait_for_a_trainer(dataclasses.replace(run, predicted_peak_bytes={}))
    assert not may_wait_for_a_trainer(dataclasses.replace(run, spec={"allow_over_memory": True}))
    assert not may_wait_for_a_trainer(dataclasses.replace(run, status="RUNNING", trainer="studio"))


def test_the_prediction_is_stored_per_device_kind_and_counts_every_worker(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    spec = RunSpec(model="m", data="d", batch_size=4, max_seq_length=128)
    peaks = predict_peaks(spec, config)
    # bf16 and the unchunked head on a GPU, float32 and the chunked head on the CPU: two predictions.
    assert peaks == {
        kind: predict_for_model(
            spec, config, False, None, spec_dtype_bytes(spec, kind == "gpu"), kind
        ).peak_bytes
        for kind in ("cpu", "gpu")
    }
    assert peaks["cpu"] != peaks["gpu"]
    # Two data-parallel workers share one trainer, each with half the micro-batch.
    halves = predict_peaks(spec.replace(batch_size=2), config)
    assert predict_peaks(spec.replace(workers=2), config) == {k: 2 * v for k, v in halves.items()}
    assert predict_peaks(spec, {"model_type": "llama"}) == {}  # no shape in config.json: not bounded
    record = RunRecord(id="r", predicted_peak_bytes=peaks)
    assert RunRecord.from_hash(record.creation_fields()).predicted_peak_bytes == peaks
    old = RunRecord(id="r").creation_fields()
    assert "predicted_peak_bytes" not in old and RunRecord.from_hash(old).predicted_peak_bytes == {}


def test_runs_root_id_is_written_once(tmp_path):
    root = tmp_path / "runs"
    first = runs_root_id(root)
    assert first.startswith("root-") and runs_root_id(root) == first
    assert (root / ID_FILE).read_text().strip() == first
    assert runs_root_id(tmp_path / "other") != first
