"""Bad input about models and uploads (issue 12's table): one model dir with a broken config.json fails
neither ListModels nor anyone's preview, an upload with an unknown chat role or 100,000-deep JSON is refused
naming file and line, and nothing of a refused upload is left under the data root."""

from __future__ import annotations

import json
import logging
import shutil
import uuid

import grpc
import pytest
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc
from service_helpers import start_gateway

from services.common.interceptors import FIELD_KEY

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.fixture(scope="module")
def catalog_gateway(tmp_path_factory, redis_server, tiny_model, chat_data):
    """A gateway over its own models root (a copy of the tiny model's config and tokenizer, and a model dir
    whose config.json is broken) and its own data root (the chat dataset)."""
    root = tmp_path_factory.mktemp("catalog")
    models, data = root / "models", root / "data"
    (models / "good").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, models / "good" / name)
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": 64,,\n}')
    shutil.copytree(chat_data, data / "chat")
    gateway = start_gateway(
        redis_server.url, f"t{uuid.uuid4().hex[:8]}:", data, root / "runs", models_root=models
    )
    yield gateway_pb2_grpc.GatewayStub(gateway.channel), data
    gateway.stop(0)


def _refused(rpc, request, code) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def test_a_broken_config_json_leaves_the_model_out_of_the_list(catalog_gateway, caplog):
    stub, _ = catalog_gateway
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        reply = stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=30)
        assert [m.name for m in reply.models] == ["good"]
    # Said in the log once (not on every call), with what is wrong and where.
    warnings = [r.getMessage() for r in caplog.records if "left out of the list" in r.getMessage()]
    assert len(warnings) == 1 and "broken/config.json is not valid JSON (line 2" in warnings[0]


def test_preview_with_the_broken_model_names_its_config_and_others_still_preview(catalog_gateway):
    stub, _ = catalog_gateway
    error = _refused(
        stub.PreviewDataset,
        gateway_pb2.PreviewDatasetRequest(path="chat", model="broken"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "broken/config.json is not valid JSON (line 2, column" in error.details()
    assert dict(error.trailing_metadata())[FIELD_KEY] == "model"
    reply = stub.PreviewDataset(gateway_pb2.PreviewDatasetRequest(path="chat", model="good"), timeout=60)
    assert reply.rows and reply.rows[0].total_tokens > 0


def _upload(stub, name: str, train: bytes) -> gateway_pb2.CreateDatasetResponse:
    valid = (json.dumps(CHAT) + "\n").encode()
    return stub.CreateDataset(
        gateway_pb2.CreateDatasetRequest(name=name, train=train, valid=valid), timeout=30
    )


def test_an_unknown_chat_role_is_refused_naming_file_and_line(catalog_gateway):
    stub, data = catalog_gateway
    before = sorted(p.name for p in data.iterdir())
    wizard = {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    reply = _upload(stub, "wizardry", f"{json.dumps(CHAT)}\n{json.dumps(wizard)}\n".encode())
    assert not reply.created
    assert [(p.file, p.line) for p in reply.problems] == [("train.jsonl", 2)]
    assert "messages[0].role must be one of system, developer, user, assistant, tool; got 'wizard'" in (
        reply.problems[0].problem
    )
    assert sorted(p.name for p in data.iterdir()) == before


def test_json_nested_100k_deep_is_a_line_problem_not_internal(catalog_gateway):
    stub, data = catalog_gateway
    before = sorted(p.name for p in data.iterdir())
    deep = ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode()
    reply = _upload(stub, "deep", (json.dumps({"text": "fine"}) + "\n").encode() + deep)
    assert not reply.created
    assert [(p.file, p.line, p.problem) for p in reply.problems] == [
        ("train.jsonl", 2, "invalid JSON (nested too deeply to parse)")
    ]
    assert sorted(p.name for p in data.iterdir()) == before
