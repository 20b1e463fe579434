"""Shared fixtures. Models and the default dataset come from `make setup` (var/models, var/data); tests that
need them fail with the command to run rather than skipping."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from services.common.paths import (
    DEFAULT_MODEL_NAME,
    DEFAULT_QUANTIZED_MODEL_NAME,
    TINY_MODEL_NAME,
    models_dir,
)


def _model(name: str) -> Path:
    path = models_dir() / name
    if not (path / "config.json").exists():
        pytest.fail(f"{path} missing: run `make models` first (make test does)")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return _model(TINY_MODEL_NAME)


@pytest.fixture(scope="session")
def default_model() -> Path:
    return _model(DEFAULT_MODEL_NAME)


@pytest.fixture(scope="session")
def default_model_4bit() -> Path:
    return _model(DEFAULT_QUANTIZED_MODEL_NAME)


def write_chat_dataset(
    root: Path, n_train: int = 48, n_valid: int = 12, n_test: int = 6, seed: int = 0
) -> Path:
    """A small, learnable chat dataset (name/age/city -> JSON) for fast engine tests."""
    rng = random.Random(seed)
    names = ["Ana", "Bob", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
    cities = ["Oslo", "Lima", "Pune", "Kyiv", "Rome", "Cairo"]
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        with open(root / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                name, city, age = rng.choice(names), rng.choice(cities), rng.randint(18, 80)
                answer = json.dumps({"name": name, "age": age, "city": city})
                record = {
                    "messages": [
                        {"role": "user", "content": f"{name} is {age} and lives in {city}. Give JSON."},
                        {"role": "assistant", "content": answer},
                    ]
                }
                fh.write(json.dumps(record) + "\n")
    return root


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    return write_chat_dataset(tmp_path_factory.mktemp("chat-data"))


# ---- services: one real Redis for the session (embedded valkey or system redis-server, random port) ----
# Each test gets its own key prefix, so tests never see each other's keys and nothing needs flushing.


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from services.common.redis_server import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    import uuid

    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def store(redis_url, redis_prefix):
    from services.common.redis_store import RunStore

    store = RunStore.from_url(redis_url, redis_prefix, events_maxlen=1000)
    yield store
    store.close()


# ---- the UI's stack: optimizer, trainer, comparator and gateway on loopback with their own Redis prefix, shared
# by the UI tests (tests/test_ui*.py); the UI finds the gateway through PEFTLAB_GATEWAY. ----


@pytest.fixture(scope="session")
def ui_stack(redis_server, tmp_path_factory):
    import uuid
    from types import SimpleNamespace

    from service_helpers import free_port, start_comparator, start_gateway, start_optimizer, start_trainer

    root = tmp_path_factory.mktemp("ui")
    data_root, runs_root = root / "data", root / "runs"
    write_chat_dataset(data_root / "chat")
    prefix = f"ui{uuid.uuid4().hex[:6]}:"
    optimizer = start_optimizer()
    trainer = start_trainer(redis_server.url, prefix, data_root, runs_root)
    comparator_port = free_port()
    gateway = start_gateway(
        redis_server.url,
        prefix,
        data_root,
        runs_root,
        optimizer_address=optimizer.address,
        comparator_address=f"127.0.0.1:{comparator_port}",
    )
    comparator = start_comparator(
        redis_server.url,
        prefix,
        comparator_port,
        gateway.address,
        optimizer.address,
        root / "experiments",
        data_root,
    )
    yield SimpleNamespace(
        gateway=gateway,
        trainer=trainer,
        optimizer=optimizer,
        comparator=comparator,
        data_root=data_root,
        runs_root=runs_root,
        redis_url=redis_server.url,
        prefix=prefix,
    )
    comparator.stop(grace=0)
    gateway.stop()
    trainer.stop()
    optimizer.stop()


@pytest.fixture(scope="session")
def ui_finished_run(ui_stack):
    """A SUCCEEDED tiny-model LoRA run on the UI stack (its adapter is in ui_stack.runs_root)."""
    from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
    from service_helpers import wait_for

    from services.common.codec import spec_to_proto

    stub = gateway_pb2_grpc.GatewayStub(ui_stack.gateway.channel)
    spec = {"model": "tiny-llama", "data": "chat", "iters": 8, "warmup_steps": 0, "eval_every": 4, "rank": 8}
    spec |= {"batch_size": 2, "max_seq_length": 64, "test_samples": 1, "max_new_tokens": 8, "val_batches": 2}
    request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto(spec), name="ui fixture run")
    run_id = stub.SubmitRun(request, timeout=30).run.id
    terminal = {
        common_pb2.RUN_STATUS_SUCCEEDED,
        common_pb2.RUN_STATUS_FAILED,
        common_pb2.RUN_STATUS_CANCELLED,
    }

    def finished():
        run = stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10).run
        return run if run.status in terminal else None

    run = wait_for(finished, timeout=180, interval=0.5, what=f"run {run_id} to finish")
    assert run.status == common_pb2.RUN_STATUS_SUCCEEDED, run.error.message
    return run


@pytest.fixture
def keep_main_module():
    """AppTest leaves sys.modules["__main__"] set to the last script it ran, and the in-process trainer's
    spawned run processes re-run __main__: put the real one back after each UI test."""
    import sys

    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


# ---- the stack the input suites attack (tests/reliability: the bad-input corpus, hypothesis, grpcurl) ----


@pytest.fixture(scope="session")
def input_stack(redis_server, tmp_path_factory, tiny_model):
    from input_stack import running_input_stack

    with running_input_stack(
        redis_server.url, tmp_path_factory.mktemp("inputs"), tiny_model, write_chat_dataset
    ) as stack:
        yield stack
