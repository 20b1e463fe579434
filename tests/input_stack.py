"""The stack the input suites attack (bad-input corpus, hypothesis messages, grpcurl): gateway, trainer,
optimizer and comparator on loopback, the gateway's bearer token on, private roots holding the tiny model,
a small chat dataset, a broken one and symlinks that lead out, and a few real runs to aim at (one finished,
one queued forever, one cancelled), submitted by the user 'default' (a second user, 'other', may read but
not change them). Shared by the session: it costs one tiny training run, which only the
suites that aim at the finished run wait for (`finished()`)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

TOKEN = "suites-token"  # the user 'default', who submits the stack's runs
OTHER_TOKEN = "suites-other-token"  # the user 'other': reads those runs, may not cancel or resume them
UPLOAD_LIMIT = 200_000  # bytes of uploads per user: the corpus' one upload past it is RESOURCE_EXHAUSTED
# Rows every split of the broken dataset carries: a good one, then lines the catalog must name.
BROKEN_ROWS = '{"text": "fine"}\nnot json at all\n{"messages": "not a list"}\n'


def _roots(base: Path, tiny_model: Path, write_chat_dataset: Callable) -> SimpleNamespace:
    models, data, runs, outside = base / "models", base / "data", base / "runs", base / "outside"
    shutil.copytree(tiny_model, models / "tiny-llama")
    (models / "no-config").mkdir()  # a model dir without config.json
    (models / "broken-config").mkdir()
    (models / "broken-config" / "config.json").write_text('{"model_type": "llama",\n  oops}\n')
    write_chat_dataset(data / "chat", n_train=16, n_valid=4, n_test=2)
    (data / "broken").mkdir()
    for split in ("train", "valid"):
        (data / "broken" / f"{split}.jsonl").write_text(BROKEN_ROWS)
    (data / "no-train").mkdir()
    (data / "no-train" / "valid.jsonl").write_text('{"text": "x"}\n')
    # Links that lead out of the roots: a dataset dir, a split file inside a real dir, a model dir.
    write_chat_dataset(outside / "secret-data", n_train=2, n_valid=1, n_test=1)
    (data / "evil-link").symlink_to(outside / "secret-data")
    (data / "leaky").mkdir()
    (data / "leaky" / "train.jsonl").symlink_to(outside / "secret-data" / "train.jsonl")
    (data / "leaky" / "valid.jsonl").symlink_to(outside / "secret-data" / "valid.jsonl")
    shutil.copytree(models / "tiny-llama", outside / "secret-model")
    (models / "evil-model").symlink_to(outside / "secret-model")
    runs.mkdir()
    return SimpleNamespace(models=models, data=data, runs=runs, outside=outside, experiments=base / "exp")


@contextmanager
def running_input_stack(
    redis_url: str, base: Path, tiny_model: Path, write_chat_dataset: Callable
) -> Iterator[SimpleNamespace]:
    from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2
    from service_helpers import (
        free_port,
        start_comparator,
        start_gateway,
        start_optimizer,
        start_trainer,
        wait_for,
    )

    from services.common.codec import spec_to_proto

    roots = _roots(base, tiny_model, write_chat_dataset)
    users = base / "users"
    users.write_text(f"other {OTHER_TOKEN}\n")  # besides PEFTLAB_API_TOKEN's user 'default'
    prefix = f"in{uuid.uuid4().hex[:6]}:"
    common = {"models_root": roots.models}
    optimizer = start_optimizer()
    trainer = start_trainer(redis_url, prefix, roots.data, roots.runs, trainer_id="t-inputs", **common)
    comparator_port = free_port()
    gateway = start_gateway(
        redis_url,
        prefix,
        roots.data,
        roots.runs,
        optimizer_address=optimizer.address,
        comparator_address=f"127.0.0.1:{comparator_port}",
        api_token=TOKEN,
        api_tokens_file=users,
        max_upload_bytes_per_user=UPLOAD_LIMIT,
        **common,
    )
    comparator = start_comparator(
        redis_url,
        prefix,
        comparator_port,
        gateway.address,
        optimizer.address,
        roots.experiments,
        roots.data,
        **common,
    )
    try:
        auth = (("authorization", f"Bearer {TOKEN}"),)
        stub = gateway_pb2_grpc.GatewayStub(gateway.channel)

        def submit(spec: dict, **fields) -> str:
            request = gateway_pb2.SubmitRunRequest(spec=spec_to_proto(spec), **fields)
            return stub.SubmitRun(request, timeout=30, metadata=auth).run.id

        def status(run_id: str) -> int:
            return stub.GetRun(trainer_pb2.GetRunRequest(run_id=run_id), timeout=10, metadata=auth).run.status

        tiny = {"model": "tiny-llama", "data": "chat", "iters": 2, "warmup_steps": 0, "batch_size": 2}
        tiny |= {"max_seq_length": 64, "test_samples": 0, "val_batches": 1, "eval_every": 0, "save_every": 0}
        succeeded = submit(tiny, name="suites finished run")
        # Strict placement on a trainer that never registers: QUEUED for as long as the session lasts.
        nowhere = common_pb2.Placement(trainer_id="t-nowhere", strict=True)
        queued = submit(tiny, name="suites queued run", placement=nowhere)
        cancelled = submit(tiny, name="suites cancelled run", placement=nowhere)
        stub.CancelRun(trainer_pb2.CancelRunRequest(run_id=cancelled), timeout=10, metadata=auth)

        def finished() -> None:
            """Wait for the finished run (the corpus needs it, and a quiet Redis; the fuzz suites need not)."""
            terminal = (common_pb2.RUN_STATUS_SUCCEEDED, common_pb2.RUN_STATUS_FAILED)
            wait_for(lambda: status(succeeded) in terminal, timeout=240, interval=0.3, what="the tiny run")
            assert status(succeeded) == common_pb2.RUN_STATUS_SUCCEEDED

        yield SimpleNamespace(
            gateway=gateway,
            trainer=trainer,
            optimizer=optimizer,
            comparator=comparator,
            roots=roots,
            redis_url=redis_url,
            prefix=prefix,
            token=TOKEN,
            auth=auth,
            runs={"SUCCEEDED": succeeded, "QUEUED": queued, "CANCELLED": cancelled},
            finished=finished,
        )
    finally:
        comparator.stop(grace=0)
        gateway.stop(0)
        trainer.stop(0)
        optimizer.stop(0)
