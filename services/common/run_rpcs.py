"""RPC bodies that the trainer and the gateway share: both read runs straight from Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

from peftlab.v1 import trainer_pb2

from services.common import codec
from services.common.errors import InvalidArgument, NotFound
from services.common.records import RunRecord
from services.common.redis_store import RunStore
from services.common.status_names import RUN_STATUSES, run_status_name
from services.common.validation import check_id, page_size
from services.common.watch import AsyncRedis, follow_run


def list_runs(store: RunStore, request: trainer_pb2.ListRunsRequest) -> trainer_pb2.ListRunsResponse:
    """ListRuns for both the trainer and the gateway (they list the same runs from Redis)."""
    records, token = store.list_runs(**_list_query(request))
    return _list_response(records, token)


async def list_runs_async(
    events: AsyncRedis, store: RunStore, request: trainer_pb2.ListRunsRequest
) -> trainer_pb2.ListRunsResponse:
    """ListRuns over redis.asyncio: the gateway serves it on its event loop, like GetRun, with no pool thread
    contending for the interpreter lock with the loop (bench/load.py)."""
    records, token = await store.list_runs_async(events.client(), **_list_query(request))
    return _list_response(records, token)


def _list_query(request: trainer_pb2.ListRunsRequest) -> dict:
    statuses = []
    for value in request.statuses:
        name = run_status_name(value)
        if name not in RUN_STATUSES:
            raise InvalidArgument(f"unknown status {value}", "statuses")
        statuses.append(name)
    if request.experiment_id:
        check_id(request.experiment_id, "experiment_id")
    return {
        "statuses": statuses,
        "page_size": page_size(request.page_size),
        "page_token": request.page_token,
        "trainer_id": request.trainer_id,
        "experiment_id": request.experiment_id,
    }


def _list_response(records: list[RunRecord], token: str) -> trainer_pb2.ListRunsResponse:
    return trainer_pb2.ListRunsResponse(runs=[codec.run_to_proto(r) for r in records], next_page_token=token)


async def get_run(events: AsyncRedis, store: RunStore, run_id: str) -> RunRecord:
    """A run's record read over redis.asyncio: GetRun, the most frequent call, then needs no pool thread."""
    check_id(run_id, "run_id")
    values = await events.client().hgetall(store.run_key(run_id))
    if not values:
        raise NotFound(f"no run {run_id!r}", "run_id")
    return RunRecord.from_hash(values)


async def watch_run(
    events: AsyncRedis, store: RunStore, request: trainer_pb2.WatchRunRequest
) -> AsyncIterator[trainer_pb2.WatchRunResponse]:
    """WatchRun as a coroutine: it waits on Redis, not in a thread (the caller leaving cancels it)."""
    check_id(request.run_id, "run_id")
    async for event in follow_run(events, store, request.run_id, request.after_event_id):
        yield trainer_pb2.WatchRunResponse(event=codec.event_to_proto(event))


def evaluate_response(run_id: str, out: dict) -> trainer_pb2.EvaluateResponse:
    response = trainer_pb2.EvaluateResponse(run_id=run_id)
    codec.fill(response, out)
    return response
