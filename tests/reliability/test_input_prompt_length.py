"""SubmitRun refuses a max_seq_length that the chat-templated prompt fills even where the prompt's text alone
(the lower bound) fits: the count is the engine's (samples.load_split with the trainer's tokenizer), so a
run refused here is one the trainer would fail, and one a token longer is accepted. Where the template
cannot be rendered here, the lower bound alone decides (the trainer names the broken template)."""

from __future__ import annotations

import json
import shutil
import uuid

import grpc
import pytest
import tokenizers
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, trainer_pb2
from service_helpers import start_gateway

from services.common.codec import spec_to_proto
from services.common.datasets.samples import load_split
from services.common.interceptors import FIELD_KEY
from services.common.records import TrainerRecord
from services.common.redis_store import RunStore
from services.common.spec import RunSpec
from services.trainer.engine.methods import load_base

PROMPT = " ".join(f"word{i}" for i in range(40))  # no system turn: the template adds its own


@pytest.fixture(scope="module")
def submit(tmp_path_factory, redis_server, tiny_model):
    """SubmitRun of a gateway over its own roots: the tiny model as `tiny`, the same with a chat template that
    does not parse as `badtemplate`, and a one-row chat dataset `templated`; one registered trainer of this
    machine's memory and no slot (an accepted run never starts). `call.bound` and `call.exact`: the prompt's
    lower bound (its text under tokenizer.json) and its length as the engine counts it."""
    from services.trainer.engine.hardware import detect_hardware

    root = tmp_path_factory.mktemp("submit-prompts")
    models, data = root / "models", root / "data"
    for name in ("tiny", "badtemplate"):
        (models / name).mkdir(parents=True)
        for file in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_model / file, models / name / file)
    config = json.loads((models / "badtemplate" / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for message in messages %}{{ message['content'] }"
    (models / "badtemplate" / "tokenizer_config.json").write_text(json.dumps(config))
    (data / "templated").mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "ok"}]}
    for split in ("train", "valid"):
        (data / "templated" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")

    bound = len(tokenizers.Tokenizer.from_file(str(tiny_model / "tokenizer.json")).encode(PROMPT).ids)
    tokenizer = load_base(RunSpec.from_dict({"model": str(tiny_model)})).tokenizer  # the trainer's own load
    exact = load_split(data / "templated" / "train.jsonl", tokenizer, 4096).samples[0].prompt_len

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RunStore.from_url(redis_server.url, prefix)
    hardware = detect_hardware().to_dict()
    store.register_trainer(TrainerRecord("tr-here", "127.0.0.1:1", slots=0, hardware=hardware), 600)
    gateway = start_gateway(redis_server.url, prefix, data, root / "runs", models_root=models)
    stub = gateway_pb2_grpc.GatewayStub(gateway.channel)

    def call(**spec):
        request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto(RunSpec.from_dict(spec)))
        return stub.SubmitRun(request, timeout=60)

    call.store, call.stub, call.bound, call.exact = store, stub, bound, exact
    yield call
    gateway.stop(0)
    store.close()


def _keys(store: RunStore) -> set:
    return {k for k in store.r.keys(f"{store.prefix}*") if not k.startswith(f"{store.prefix}trainer")}


def _refused(submit, **spec) -> tuple[str, str]:
    before = _keys(submit.store)
    with pytest.raises(grpc.RpcError) as caught:
        submit(**spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert _keys(submit.store) == before  # nothing queued, nothing half-written
    return dict(caught.value.trailing_metadata())[FIELD_KEY], caught.value.details()


def _accepted(submit, **spec) -> None:
    run = submit(**spec).run
    submit.stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=run.id), timeout=30)


BASE = {"model": "tiny", "data": "templated", "iters": 2}


@pytest.mark.parametrize("mask", ["assistant", "last_assistant"])
def test_a_max_seq_length_the_templated_prompt_fills_is_refused(submit, mask):
    limit = submit.exact - 1
    assert submit.bound <= limit  # the text alone fits: the lower bound would accept it
    field, message = _refused(submit, **BASE, mask_prompt=mask, max_seq_length=limit)
    assert field == "spec.max_seq_length"
    assert f"templated/train.jsonl:1 is {submit.exact} tokens with the chat template" in message
    assert f"max_seq_length={limit} leaves nothing to learn" in message


@pytest.mark.parametrize("above", [0, 1])
def test_a_max_seq_length_the_templated_prompt_fits_is_accepted(submit, above):
    # At the prompt's length the engine still learns one token (its boundary: test_gateway_prompt_length).
    _accepted(submit, **BASE, max_seq_length=submit.exact + above)


def test_a_template_that_does_not_render_leaves_the_lower_bound_deciding(submit):
    spec = {**BASE, "model": "badtemplate"}
    _accepted(submit, **spec, max_seq_length=submit.exact - 1)  # the trainer names the template
    field, message = _refused(submit, **spec, max_seq_length=submit.bound - 1)
    assert field == "spec.max_seq_length" and f"is at least {submit.bound} tokens" in message
