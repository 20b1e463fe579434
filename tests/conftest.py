"""Shared fixtures. Models and the default dataset come from `make setup` (var/models, var/data); tests that
need them fail with the command to run rather than skipping."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from services.trainer.engine.paths import (
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
