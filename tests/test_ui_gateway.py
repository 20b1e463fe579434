"""The gateway RPCs the web UI needs, on the real stack (gateway, trainer, optimizer, Redis): uploading a
dataset (CreateDataset), downloading an adapter, the model's shape in ListModels, and sizing a run through
the optimizer (RecommendBatchSize forwarded as is, RecommendRankFromRun from a probe's adapter)."""

from __future__ import annotations

import json

import grpc
import pytest
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, optimizer_pb2, optimizer_pb2_grpc
from service_helpers import start_gateway

from services.common.memory import ModelShape, fit_batch_size
from services.common.paths import models_dir


@pytest.fixture
def stub(ui_stack):
    return gateway_pb2_grpc.GatewayStub(ui_stack.gateway.channel)


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _rows(ui_stack, split: str) -> bytes:
    return (ui_stack.data_root / "chat" / f"{split}.jsonl").read_bytes()


def test_create_dataset_writes_a_valid_upload(stub, ui_stack):
    request = gateway_pb2.CreateDatasetRequest(
        name="uploaded", train=_rows(ui_stack, "train"), valid=_rows(ui_stack, "valid")
    )
    response = stub.CreateDataset(request, timeout=10)
    assert response.created and not response.problems
    assert response.dataset.name == "uploaded" and response.dataset.format == "chat"
    assert {s.split: s.rows for s in response.dataset.splits} == {"train": 48, "valid": 12}
    assert (ui_stack.data_root / "uploaded" / "train.jsonl").read_bytes() == request.train
    listed = [d.name for d in stub.ListDatasets(gateway_pb2.ListDatasetsRequest(), timeout=10).datasets]
    assert "uploaded" in listed and not any(name.startswith(".") for name in listed)
    again = _error(lambda: stub.CreateDataset(request, timeout=10))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


def test_create_dataset_names_each_bad_line_and_writes_nothing(stub, ui_stack):
    good = _rows(ui_stack, "train").splitlines()
    train = b"\n".join([good[0], b"{oops", good[1], b'{"text": 3}', b"[1, 2]"]) + b"\n"
    request = gateway_pb2.CreateDatasetRequest(name="bad-upload", train=train, valid=b'{"prompt": "x"}\n')
    response = stub.CreateDataset(request, timeout=10)
    assert not response.created and not response.HasField("dataset")
    problems = [(p.file, p.line) for p in response.problems]
    assert problems == [("train.jsonl", 2), ("train.jsonl", 4), ("train.jsonl", 5), ("valid.jsonl", 1)]
    assert "invalid JSON" in response.problems[0].problem
    assert not (ui_stack.data_root / "bad-upload").exists()
    assert not [p for p in ui_stack.data_root.iterdir() if p.name.startswith(".upload")]


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"name": "../x"}, "name"), ({"name": "ok", "valid": b""}, "valid"), ({"name": "ok", "max_problems": 5000}, "max_problems")],
)  # fmt: skip
def test_create_dataset_bad_requests(stub, ui_stack, fields, field):
    request = gateway_pb2.CreateDatasetRequest(train=_rows(ui_stack, "train"), valid=_rows(ui_stack, "valid"))
    for key, value in fields.items():
        setattr(request, key, value)
    error = _error(lambda: stub.CreateDataset(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())["peftlab-field"] == field


def test_download_adapter_streams_the_run_files(stub, ui_finished_run):
    files: dict[str, bytearray] = {}
    sizes = {}
    for chunk in stub.DownloadAdapter(
        gateway_pb2.DownloadAdapterRequest(run_id=ui_finished_run.id), timeout=30
    ):
        files.setdefault(chunk.file, bytearray()).extend(chunk.data)
        sizes[chunk.file] = chunk.size_bytes
    run_dir = ui_finished_run.run_dir
    assert list(files) == ["adapter_config.json", "adapters.safetensors"]
    for name, data in files.items():
        on_disk = open(f"{run_dir}/{name}", "rb").read()
        assert bytes(data) == on_disk and sizes[name] == len(on_disk)
    assert json.loads(files["adapter_config.json"])["lora_parameters"]["rank"] == 8


def test_download_adapter_refusals(stub):
    missing = _error(
        lambda: list(stub.DownloadAdapter(gateway_pb2.DownloadAdapterRequest(run_id="r-x"), timeout=10))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    bad = _error(
        lambda: list(stub.DownloadAdapter(gateway_pb2.DownloadAdapterRequest(run_id="a/b"), timeout=10))
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_models_carries_the_shape(stub):
    models = {m.name: m for m in stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=10).models}
    config = json.loads((models_dir() / "tiny-llama" / "config.json").read_text())
    shape = ModelShape.from_config(config)
    got = models["tiny-llama"].shape
    assert (got.hidden_size, got.intermediate_size, got.num_layers, got.num_heads, got.num_kv_heads) == (
        shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.num_heads, shape.num_kv_heads,
    )  # fmt: skip
    assert got.vocab_size == shape.vocab_size and got.head_dim == shape.head_dim


def test_recommend_batch_size_is_the_optimizers_answer(stub, ui_stack):
    shape = stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=10).models
    tiny = next(m for m in shape if m.name == "tiny-llama").shape
    request = optimizer_pb2.RecommendBatchSizeRequest(
        model_shape=tiny, method="lora", seq_len=256, memory_budget_gb=0.5, target_effective_batch=64
    )
    through_gateway = stub.RecommendBatchSize(request, timeout=10)
    direct = optimizer_pb2_grpc.OptimizerStub(ui_stack.optimizer.channel).RecommendBatchSize(
        request, timeout=10
    )
    assert through_gateway == direct
    engine = fit_batch_size(
        ModelShape.from_config(json.loads((models_dir() / "tiny-llama" / "config.json").read_text())),
        "lora", 256, int(0.5e9), target_effective_batch=64,
    )  # fmt: skip
    assert (through_gateway.batch_size, through_gateway.grad_accumulation) == (
        engine.batch_size, engine.grad_accumulation,
    )  # fmt: skip
    assert through_gateway.predicted_peak_bytes == engine.estimate.peak_bytes <= 0.5e9
    bad = _error(
        lambda: stub.RecommendBatchSize(optimizer_pb2.RecommendBatchSizeRequest(method="lora"), timeout=10)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_recommend_batch_size_without_an_optimizer_is_unavailable(ui_stack):
    lonely = start_gateway(
        ui_stack.gateway.core.config.redis_url, "lonely:", ui_stack.data_root, ui_stack.runs_root
    )
    try:
        request = optimizer_pb2.RecommendBatchSizeRequest(method="lora")
        error = _error(
            lambda: gateway_pb2_grpc.GatewayStub(lonely.channel).RecommendBatchSize(request, timeout=10)
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        lonely.stop()


def test_recommend_rank_from_a_probe_run(stub, ui_finished_run):
    request = gateway_pb2.RecommendRankFromRunRequest(
        run_id=ui_finished_run.id, options=optimizer_pb2.RecommendRankRequest(train_tokens=5000)
    )
    answer = stub.RecommendRankFromRun(request, timeout=30)
    assert len(answer.layers) == 4 * 7  # every adapted projection of the tiny model's four blocks
    assert {layer.probe_rank for layer in answer.layers} == {8} and answer.probe_rank == 8
    assert 1 <= answer.rank <= 64 and answer.data_bound > 0 and answer.explanation
    assert all(
        layer.singular_values == sorted(layer.singular_values, reverse=True) for layer in answer.layers
    )
    request.options.layers.add(name="x")
    error = _error(lambda: stub.RecommendRankFromRun(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = gateway_pb2.RecommendRankFromRunRequest(run_id="r-nope")
    assert _error(lambda: stub.RecommendRankFromRun(unknown, timeout=10)).code() == grpc.StatusCode.NOT_FOUND


def test_default_space_is_the_optimizers_and_the_cli_and_ui_study_over_it(stub, ui_stack, monkeypatch):
    import argparse

    from services.cli.experiments import _space
    from services.client import Client
    from ui import client as ui_client
    from ui import reports

    request = optimizer_pb2.GetDefaultSpaceRequest(methods=["lora", "full"], total_steps=40)
    through_gateway = stub.GetDefaultSpace(request, timeout=10)
    direct = optimizer_pb2_grpc.OptimizerStub(ui_stack.optimizer.channel).GetDefaultSpace(request, timeout=10)
    assert through_gateway == direct
    rank = next(p for p in through_gateway.space.parameters if p.name == "rank")
    assert (rank.int_range.low, rank.int_range.high) == (2, 128) and rank.condition.parent == "method"
    bad = _error(
        lambda: stub.GetDefaultSpace(optimizer_pb2.GetDefaultSpaceRequest(methods=["bogus"]), timeout=10)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT

    args = argparse.Namespace(space=None, methods="lora,full", iters=40)
    with Client(ui_stack.gateway.address) as cli:
        assert _space(cli, args) == direct.space  # `peftlab study` without --space

    monkeypatch.setenv("PEFTLAB_GATEWAY", ui_stack.gateway.address)
    monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
    ui_client.refresh()
    form = reports.StudyForm("s", "tiny-llama", "chat", 40, ("lora", "full"), 6, 2, "best_valid_loss", True)
    space = ui_client.default_space(reports.default_space_request(form)).space
    assert reports.study_request(form, space).space == direct.space  # the UI's study form
    ui_client.refresh()
