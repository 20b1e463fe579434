"""Following an event stream in Redis without holding a thread: the body of WatchRun (trainer and gateway)
and WatchExperiment (comparator), as coroutines over redis.asyncio.

Resumable by construction: events are read strictly after the id the client last saw, straight from the
Redis stream, so a watcher can reconnect to any gateway (or after a restart) and continue. A watch ends once
its subject is SUCCEEDED, FAILED or CANCELLED and every event up to that point has been sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from services.common.errors import NotFound
from services.common.records import RunEvent
from services.common.redis_store import RunStore, check_event_id
from services.common.status_machine import TERMINAL

# A watch blocks this long on its stream per read. Every status change is an event in the stream, so the
# wait ends as soon as anything happens; the timeout only bounds how stale a deleted subject can be.
BLOCK_MS = 5000


class AsyncRedis:
    """One redis.asyncio client, made on first use inside the server's event loop (a client belongs to the
    loop that made it). The URL carries the password and TLS (rediss://) like every other client's."""

    def __init__(self, url: str):
        self.url = url
        self._client: redis.asyncio.Redis | None = None

    def client(self) -> redis.asyncio.Redis:
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(self.url, decode_responses=True)
        return self._client


@dataclass
class StreamEntry:
    id: str
    kind: str
    data: dict[str, Any]


async def follow_stream(
    r: redis.asyncio.Redis,
    status_key: str,
    events_key: str,
    after: str,
    ends: Callable[[StreamEntry], bool],
    what: str,
    field_name: str,
    block_ms: int = BLOCK_MS,
) -> AsyncIterator[StreamEntry]:
    """Entries of `events_key` after `after` until the hash `status_key` says the subject ended. After an
    entry for which `ends` holds, the next read does not block: a finished subject's watch ends at once."""
    check_event_id(after)
    if await r.hget(status_key, "status") is None:
        raise NotFound(f"no {what}", field_name)
    last = after or "0-0"
    saw_end = False
    while True:
        if saw_end:
            entries = await r.xrange(events_key, min=f"({last}", count=200)
        else:
            reply = await r.xread({events_key: last}, count=200, block=block_ms)
            entries = reply[0][1] if reply else []
        for eid, fields in entries:
            entry = StreamEntry(eid, fields.get("kind", ""), json.loads(fields.get("data") or "{}"))
            yield entry
            last = eid
            saw_end = ends(entry)
        if entries:
            continue
        status = await r.hget(status_key, "status")
        if status is None or status in TERMINAL:
            # Anything written with the final status is in the stream already: drain and end.
            for eid, fields in await r.xrange(events_key, min=f"({last}", count=10000):
                yield StreamEntry(eid, fields.get("kind", ""), json.loads(fields.get("data") or "{}"))
            return
        saw_end = False


async def follow_run(
    r: redis.asyncio.Redis, store: RunStore, run_id: str, after_event_id: str = "", block_ms: int = BLOCK_MS
) -> AsyncIterator[RunEvent]:
    def ends(entry: StreamEntry) -> bool:
        return entry.kind == "status" and entry.data.get("status") in TERMINAL

    entries = follow_stream(
        r,
        store.run_key(run_id),
        store.events_key(run_id),
        after_event_id,
        ends,
        f"run {run_id!r}",
        "run_id",
        block_ms,
    )
    async for entry in entries:
        yield RunEvent(id=entry.id, run_id=run_id, kind=entry.kind, data=entry.data)
