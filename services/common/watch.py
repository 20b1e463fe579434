"""Following an event stream in Redis without holding a thread: the body of WatchRun (trainer and gateway)
and WatchExperiment (comparator), as coroutines over redis.asyncio.

Resumable by construction: events are read strictly after the id the client last saw, straight from the
Redis stream, so a watcher can reconnect to any gateway (or after a restart) and continue. A watch ends once
its subject is SUCCEEDED, FAILED or CANCELLED and every event up to that point has been sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from services.common.errors import NotFound
from services.common.records import RunEvent
from services.common.redis_store import RunStore, check_event_id
from services.common.status_machine import TERMINAL

# The hub's XREAD blocks this long per round, then starts the next with the watches waiting by then.
BLOCK_MS = 5000
# A quiet watch re-reads its subject after a period drawn from this range. Every status change is an event in
# the stream, so a watch wakes as soon as anything happens; the re-read only bounds how stale a deleted subject
# can be. Each draws its own period: 500 watches opened together with one fixed 5 s period all re-read in the
# same half second, and every call in flight waited behind them (bench/load.py: GetRun p99 220 ms, p50 7 ms).
RECHECK_SECONDS = (20.0, 40.0)
# Watches read through a small shared pool (waiting for a connection, not failing, when it is busy).
READ_CONNECTIONS = 32


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class StreamHub:
    """One blocking XREAD over every watched stream, on one connection, however many watches are open: each
    watch reads its own entries without blocking and parks here until its stream grows. A watch on a stream
    the in-flight XREAD does not cover wakes it with CLIENT UNBLOCK, so it waits no longer than needed."""

    def __init__(self, url: str, reads: redis.asyncio.Redis):
        self.conn = redis.asyncio.Redis.from_url(
            url, decode_responses=True, single_connection_client=True, socket_timeout=BLOCK_MS / 1000 + 10
        )
        self.reads = reads
        self.waiters: dict[str, list[tuple[str, asyncio.Future]]] = {}
        self.task: asyncio.Task | None = None
        self.blocked_on: set[str] = set()
        self.client_id: int | None = None
        self.unblocking = False

    async def wait(self, key: str, after: str, timeout: float) -> None:
        """Until `key` has an entry after `after`, or `timeout` seconds; raises if Redis is unreachable."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append((after, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        elif key not in self.blocked_on and self.client_id is not None and not self.unblocking:
            self.unblocking = True
            asyncio.create_task(self._unblock(self.client_id))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            entries = self.waiters.get(key, [])
            if (after, future) in entries:
                entries.remove((after, future))
            if not entries:
                self.waiters.pop(key, None)
        if future.done() and future.exception() is not None:
            raise future.exception()

    async def _unblock(self, client_id: int) -> None:
        try:
            await self.reads.client_unblock(client_id)
        except redis.RedisError:
            pass  # the XREAD ends by its own timeout
        finally:
            self.unblocking = False

    async def _run(self) -> None:
        while self.waiters:
            streams = {
                key: min((after for after, _ in entries), key=_stream_id)
                for key, entries in self.waiters.items()
                if entries
            }
            try:
                self.client_id = await self.conn.client_id()
                self.blocked_on = set(streams)
                reply = await self.conn.xread(streams, count=1, block=BLOCK_MS)
            except redis.RedisError as exc:
                self._wake(list(streams), exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self.client_id = None
                self.blocked_on = set()
            self._wake([key for key, _ in reply or []])

    def _wake(self, keys: list[str], error: Exception | None = None) -> None:
        for key in keys:
            for _, future in self.waiters.get(key, []):
                if not future.done():
                    future.set_exception(error) if error else future.set_result(None)


_OPEN: weakref.WeakSet[AsyncRedis] = weakref.WeakSet()


async def close_clients(loop: asyncio.AbstractEventLoop) -> None:
    """Close the watches' Redis clients made on `loop` (a server calls this before its loop ends)."""
    for events in list(_OPEN):
        if events.loop is loop:
            await events.aclose()


class AsyncRedis:
    """The watches' Redis: a small read pool and the stream hub, made on first use inside the server's event
    loop (redis.asyncio clients belong to the loop that made them). The URL carries the password and TLS
    (rediss://) as every other client's does."""

    def __init__(self, url: str):
        self.url = url
        self._client: redis.asyncio.Redis | None = None
        self._hub: StreamHub | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> redis.asyncio.Redis:
        if self._client is None:
            self.loop = asyncio.get_running_loop()
            _OPEN.add(self)
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, decode_responses=True, max_connections=READ_CONNECTIONS, timeout=30
            )
            self._client = redis.asyncio.Redis(connection_pool=pool)
        return self._client

    async def aclose(self) -> None:
        if self._hub is not None:
            await self._hub.conn.aclose()
        if self._client is not None:
            await self._client.aclose()
        self._client = self._hub = None

    def hub(self) -> StreamHub:
        if self._hub is None:
            self._hub = StreamHub(self.url, self.client())
        return self._hub


@dataclass
class StreamEntry:
    id: str
    kind: str
    data: dict[str, Any]


async def follow_stream(
    events: AsyncRedis,
    status_key: str,
    events_key: str,
    after: str,
    what: str,
    field_name: str,
) -> AsyncIterator[StreamEntry]:
    """Entries of `events_key` after `after` until the hash `status_key` says the subject ended and every
    entry up to then was sent."""
    check_event_id(after)
    r = events.client()
    if await r.hget(status_key, "status") is None:
        raise NotFound(f"no {what}", field_name)
    last = after or "0-0"
    while True:
        # The status is read before the stream: the final status and its event are written together, so if
        # the status was final before this read, the read below holds every event up to it. (Read after, the
        # subject could end between the two reads and the watch would miss its last events.)
        status = await r.hget(status_key, "status")
        entries = await r.xrange(events_key, min=f"({last}", count=200)
        for eid, fields in entries:
            yield StreamEntry(eid, fields.get("kind", ""), json.loads(fields.get("data") or "{}"))
            last = eid
        if entries:
            continue
        if status is None or status in TERMINAL:
            return
        await events.hub().wait(events_key, last, random.uniform(*RECHECK_SECONDS))


async def follow_run(
    events: AsyncRedis, store: RunStore, run_id: str, after_event_id: str = ""
) -> AsyncIterator[RunEvent]:
    entries = follow_stream(
        events, store.run_key(run_id), store.events_key(run_id), after_event_id, f"run {run_id!r}", "run_id"
    )
    async for entry in entries:
        yield RunEvent(id=entry.id, run_id=run_id, kind=entry.kind, data=entry.data)
