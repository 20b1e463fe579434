"""Runs that cannot start are refused at SubmitRun, before anything is queued (issue 12's table): predicted
over every trainer's memory (unless allow_over_memory), target_modules the model's blocks lack, num_layers
beyond its blocks, a broken config.json, a max_seq_length the prompt alone fills. Redis is unchanged after
each refusal."""

from __future__ import annotations

import json
import shutil
import uuid

import grpc
import pytest
from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway

from services.common.codec import spec_to_proto
from services.common.interceptors import FIELD_KEY
from services.common.records import TrainerRecord
from services.common.redis_store import RunStore
from services.common.spec import RunSpec

LONG_PROMPT = " ".join(f"word{i}" for i in range(120))


@pytest.fixture(scope="module")
def submit(tmp_path_factory, redis_server, tiny_model, chat_data):
    """SubmitRun of a gateway over its own roots (the tiny model's config and tokenizer as `tiny`, a `broken`
    model dir, the chat data and a dataset of long prompts), with one registered trainer of this machine's
    memory and no slot (nothing is placed, so an accepted run never starts)."""
    from services.trainer.engine.hardware import detect_hardware

    root = tmp_path_factory.mktemp("submit")
    models, data = root / "models", root / "data"
    (models / "tiny").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, models / "tiny" / name)
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text('{"model_type": "llama", "hidden_size": 64')
    shutil.copytree(chat_data, data / "chat")
    (data / "long").mkdir()
    row = {"messages": [{"role": "user", "content": LONG_PROMPT}, {"role": "assistant", "content": "ok"}]}
    for split in ("train", "valid"):
        (data / "long" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RunStore.from_url(redis_server.url, prefix)
    hardware = detect_hardware().to_dict()
    store.register_trainer(TrainerRecord("tr-here", "127.0.0.1:1", slots=0, hardware=hardware), 600)
    gateway = start_gateway(redis_server.url, prefix, data, root / "runs", models_root=models)
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)

    def call(**spec):
        request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto(RunSpec.from_dict(spec)))
        return stub.SubmitRun(request, timeout=60)

    call.store, call.stub, call.memory = store, stub, hardware["total_memory_bytes"]
    yield call
    gateway.stop(0)
    store.close()


def _keys(store: RunStore) -> set:
    return {k for k in store.r.keys(f"{store.prefix}*") if not k.startswith(f"{store.prefix}trainer")}


def _refused(submit, code: grpc.StatusCode, **spec) -> tuple[str, str]:
    before = _keys(submit.store)
    with pytest.raises(grpc.RpcError) as caught:
        submit(**spec)
    assert caught.value.code() == code, caught.value.details()
    assert _keys(submit.store) == before  # nothing queued, nothing half-written
    return dict(caught.value.trailing_metadata())[FIELD_KEY], caught.value.details()


BASE = {"model": "tiny", "data": "chat", "iters": 2, "max_seq_length": 64}


def test_a_run_predicted_over_every_trainer_is_refused_naming_the_numbers(submit):
    field, message = _refused(
        submit, grpc.StatusCode.FAILED_PRECONDITION, **{**BASE, "batch_size": 512, "max_seq_length": 4096}
    )
    assert field == "spec.batch_size"
    assert "predicted peak memory" in message and "micro-batch 512 x 4096 tokens" in message
    assert f"tr-here, has {submit.memory / 2**30:.1f} GiB" in message and "allow_over_memory" in message


def test_batch_size_auto_is_checked_at_its_smallest_batch(submit):
    field, message = _refused(
        submit, grpc.StatusCode.FAILED_PRECONDITION, **{**BASE, "batch_size": 0, "max_seq_length": 65536}
    )
    assert field == "spec.max_seq_length" and "batch_size auto, at its smallest" in message
    # At a size that fits, auto is accepted (the engine picks the batch then).
    run = submit(**{**BASE, "batch_size": 0}).run
    submit.stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=30)


def test_allow_over_memory_submits_anyway(submit):
    run = submit(**{**BASE, "batch_size": 512, "max_seq_length": 4096, "allow_over_memory": True}).run
    assert run.status == common_pb2.RUN_STATUS_QUEUED  # queued (the trainer here has no slot to run it)
    submit.stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=30)


def test_target_modules_the_blocks_lack_are_invalid(submit):
    field, message = _refused(
        submit,
        grpc.StatusCode.INVALID_ARGUMENT,
        **{**BASE, "target_modules": ["self_attn.q_proj", "attn.qkv"]},
    )
    assert field == "spec.target_modules" and "unknown module(s) ['attn.qkv']" in message
    assert "mlp.down_proj" in message  # what the blocks do have


def test_num_layers_beyond_the_blocks_is_invalid(submit):
    field, message = _refused(submit, grpc.StatusCode.INVALID_ARGUMENT, **{**BASE, "num_layers": 1000})
    assert field == "spec.num_layers" and "exceeds the 4 blocks of model 'tiny'" in message


def test_a_broken_config_json_is_a_failed_precondition(submit):
    field, message = _refused(submit, grpc.StatusCode.FAILED_PRECONDITION, **{**BASE, "model": "broken"})
    assert field == "spec.model" and "broken/config.json is not valid JSON (line 1" in message


def test_a_max_seq_length_the_prompt_fills_is_invalid(submit):
    field, message = _refused(
        submit, grpc.StatusCode.INVALID_ARGUMENT, **{**BASE, "data": "long", "max_seq_length": 64}
    )
    assert field == "spec.max_seq_length" and "long/train.jsonl:1 is at least" in message
    # Long enough for the prompt: accepted.
    run = submit(**{**BASE, "data": "long", "max_seq_length": 1024}).run
    submit.stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=30)
