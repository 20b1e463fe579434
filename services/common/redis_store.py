"""Run state, run events and the trainer registry in Redis (ARCHITECTURE.md §3).

Key layout (every key starts with the configurable prefix, default `peftlab:`):

    run:{id}               hash: status, spec (JSON), trainer, timestamps (ms), progress, metrics, error, ...
    run:{id}:events        stream, capped (XADD MAXLEN ~): fields `kind` and `data` (JSON); see status_machine.EVENT_KINDS
    runs                   zset of every run id, scored by a creation sequence number (newest = highest)
    runs:seq               counter behind those scores
    runs:status:{STATUS}   zset per status, same scores: paged listing filtered by status without a scan
    queue                  zset of runs waiting for a trainer (QUEUED, or RESUMING with no trainer), FIFO
    events                 stream of every status change (fields run_id, status): wakes the gateway's placer
    trainers               set of trainer ids that registered (dead ones are pruned by the reaper)
    trainer:{id}           hash with a TTL, renewed by the trainer's heartbeat: address, hardware, slots, ...
    trainer:{id}:runs      set of the run ids holding that trainer's slots

Multi-key writes run as the Lua scripts of status_machine.py; the records are in records.py. Callers use the
store's methods, never the key layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from services.common import status_machine
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.common.records import SLOT_MARK, RunEvent, RunRecord, TrainerRecord, now_ms
from services.common.status_machine import STATUSES

# ASCII digits and \Z: "\d" takes other scripts' digits and "$" a trailing newline, which Redis refuses.
_EVENT_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?\Z")


class TransitionRefused(FailedPrecondition):
    """The run is not in a status (or on a trainer) the requested change may start from."""

    def __init__(self, message: str, current: str):
        super().__init__(message)
        self.current = current


class RedisRefused(RuntimeError):
    """The Redis server refused this client's credentials (no password, or the wrong one)."""


def redacted(url: str) -> str:
    """A Redis URL with its password masked (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _page_query(keys: list[str], below: int | None, n: int) -> Callable[[Any], None]:
    """Queues, per key, the `n` members scored below `below` (newest first)."""
    top = f"({below}" if below is not None else "+inf"

    def queue(pipe: Any) -> None:
        for key in keys:
            pipe.zrevrangebyscore(key, top, "-inf", start=0, num=n, withscores=True)

    return queue


def _trainers_from(replies: list) -> list[TrainerRecord]:
    """The records of the live ones among (hash, slot members) replies; an expired entry's hash is empty."""
    return [
        TrainerRecord.from_hash(replies[i], replies[i + 1]) for i in range(0, len(replies), 2) if replies[i]
    ]


def _merged(keys: list[str], replies: list, n: int) -> list[tuple[str, int]]:
    """The newest `n` of the members the page query found over all keys."""
    merged = [(m, int(s)) for rows in replies[: len(keys)] for m, s in rows]
    merged.sort(key=lambda item: -item[1])
    return merged[:n]


class TrainerGone(FailedPrecondition):
    """The trainer to place on has no live registry entry (its heartbeat expired)."""


def check_event_id(value: str, field_name: str = "after_event_id") -> str:
    if value and not _EVENT_ID.match(value):
        raise InvalidArgument(f"must be a stream id like '1712345678901-0', got {value!r}", field_name)
    return value


def read_stream(
    r: redis.Redis, key: str, after: str, block_ms: int | None, count: int
) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of a stream's `kind`/`data` entries strictly after stream id `after` ("" = from the oldest
    kept); with block_ms, waits up to that long when there are none."""
    after = check_event_id(after) or "0-0"
    if block_ms is None:
        entries = r.xrange(key, min=f"({after}", count=count)
    else:
        reply = r.xread({key: after}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []
    return list(entries)


def check_credentials(client: redis.Redis, url: str) -> None:
    """Fail at once, in words, when the server wants another password than the URL's. A server that is not
    up yet is left to the first real call (services retry those)."""
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        given = "the password in the URL" if urlsplit(url).password else "no password"
        raise RedisRefused(
            f"Redis at {redacted(url)} refused {given} ({exc}); set PEFTLAB_REDIS_URL to "
            "redis://:PASSWORD@host:port/db with the server's requirepass (rediss:// for TLS)"
        ) from None
    except redis.ConnectionError:
        pass


# ---- the store ----------------------------------------------------------------------------------------


class RunStore:
    """All of peftlab's Redis reads and writes. Thread-safe (redis-py pools its connections)."""

    def __init__(self, client: redis.Redis, prefix: str = "peftlab:", events_maxlen: int = 10000):
        self.r = client
        self.prefix = prefix
        self.events_maxlen = events_maxlen
        self._create = client.register_script(status_machine.CREATE)
        self._transition = client.register_script(status_machine.TRANSITION)
        self._append = client.register_script(status_machine.APPEND)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "peftlab:", events_maxlen: int = 10000, **client_options: Any
    ) -> RunStore:
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, **client_options)
        check_credentials(client, url)
        return cls(client, prefix, events_maxlen)

    def close(self) -> None:
        self.r.close()

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    # keys
    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def events_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:events"

    def trainer_key(self, trainer_id: str) -> str:
        return f"{self.prefix}trainer:{trainer_id}"

    def slots_key(self, trainer_id: str) -> str:
        return f"{self.prefix}trainer:{trainer_id}:runs"

    # ---- runs ----

    def create_run(self, record: RunRecord, claim: str = "", reason: str = "submitted") -> RunRecord:
        """Record a new run: QUEUED (and in the queue), or PLACED on `claim` with its slot taken."""
        options: dict[str, Any] = {
            "fields": record.creation_fields(),
            "now": now_ms(),
            "maxlen": self.events_maxlen,
            "reason": reason,
        }
        if claim:
            options["claim"] = claim
        out = self._create(args=[self.prefix, record.id, json.dumps(options)])
        if out[0] == "exists":
            raise TransitionRefused(f"run {record.id} already exists", "")
        self._raise_refused(record.id, out)
        return self.get_run(record.id)

    def get_run(self, run_id: str) -> RunRecord:
        values = self.r.hgetall(self.run_key(run_id))
        if not values:
            raise NotFound(f"no run {run_id!r}", "run_id")
        return RunRecord.from_hash(values)

    def get_runs(self, run_ids: list[str]) -> list[RunRecord]:
        pipe = self.r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(self.run_key(run_id))
        return [RunRecord.from_hash(v) for v in pipe.execute() if v]

    def status_of(self, run_id: str) -> str:
        status = self.r.hget(self.run_key(run_id), "status")
        if status is None:
            raise NotFound(f"no run {run_id!r}", "run_id")
        return status

    def transition(
        self,
        run_id: str,
        to: str,
        *,
        only_from: Iterable[str] | None = None,
        expect_trainer: str | None = None,
        expect_attempt: int | None = None,
        claim: str = "",
        release: bool = False,
        queue: str = "",
        set_fields: dict[str, Any] | None = None,
        delete: Iterable[str] = (),
        reason: str = "",
        error: dict[str, str] | None = None,
        events: Iterable[tuple[str, dict[str, Any]]] = (),
    ) -> tuple[str, str]:
        """Move a run to status `to` atomically, with everything that goes with it.

        `expect_attempt` fences a write by the process that owns one attempt of the run: refused once the run
        was started again (a resume elsewhere, or here after this trainer lost Redis), so a stale outcome never
        overwrites a newer attempt's record.
        `claim` takes a slot on that trainer (refused if it is gone or full); `release` frees the slot of the
        run's current trainer; `queue` is "add" or "remove"; `events` are appended before the status event.
        Returns (previous status, id of the status event). Raises TransitionRefused when the run's status is
        not one the status machine (narrowed by `only_from`) allows to become `to`.
        """
        allowed = status_machine.allowed_from(to)
        if only_from is not None:
            allowed = [s for s in allowed if s in set(only_from)]
        fields = {k: _hash_value(v) for k, v in (set_fields or {}).items()}
        if error is not None:
            fields["error"] = json.dumps(error)
        options: dict[str, Any] = {
            "to": to,
            "from": allowed,
            "set": fields,
            "del": list(delete),
            "events": [{"kind": k, "data": json.dumps(d, default=_json_default)} for k, d in events],
            "reason": reason,
            "now": now_ms(),
            "maxlen": self.events_maxlen,
            "release": bool(release),
        }
        if expect_trainer is not None:
            options["expect_trainer"] = expect_trainer
        if expect_attempt is not None:
            options["expect_attempt"] = str(expect_attempt)
        if claim:
            options["claim"] = claim
        if queue:
            options["queue"] = queue
        if error is not None:
            options["error"] = error
        out = self._transition(args=[self.prefix, run_id, _lua_json(options)])
        self._raise_refused(run_id, out, to)
        return out[1], out[2]

    def _raise_refused(self, run_id: str, out: list[str], to: str = "") -> None:
        tag = out[0]
        if tag == "ok":
            return
        if tag == "missing":
            raise NotFound(f"no run {run_id!r}", "run_id")
        if tag == "status":
            raise TransitionRefused(f"run {run_id} is {out[1]}; it cannot become {to}", out[1])
        if tag == "trainer":
            raise TransitionRefused(f"run {run_id} is on trainer {out[1] or '(none)'}", out[1])
        if tag == "attempt":
            raise TransitionRefused(f"run {run_id} is on attempt {out[1]} now; this write is stale", out[1])
        if tag == "trainer-gone":
            raise TrainerGone(f"trainer {out[1]} is not registered (no heartbeat)")
        if tag == "no-slot":
            raise ResourceExhausted(f"trainer {out[1]} has no free slot")
        raise RuntimeError(f"unexpected script result {out!r}")

    def append_event(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        attempt: int,
        progress: dict[str, Any] | None = None,
        seq: int = 0,
    ) -> str | None:
        """Append a step/eval/log/... event and update the run's progress fields, atomically.

        Only while the run is active and still on this attempt (a stale child of a run that was lost and
        resumed elsewhere must not write into the new attempt). `seq` (1, 2, ... per attempt; 0 = unnumbered)
        makes a repeated write harmless: an event already recorded is not appended twice. Returns the event
        id, "" for a repeat, or None if refused.
        """
        out = self._append(
            args=[
                self.prefix,
                run_id,
                kind,
                json.dumps(data, default=_json_default),
                self.events_maxlen,
                str(attempt),
                now_ms(),
                _lua_json({k: _hash_value(v) for k, v in (progress or {}).items()}),
                str(seq),
            ]
        )
        if out[0] == "dup":
            return ""
        return out[1] if out[0] == "ok" else None

    def read_events(
        self, run_id: str, after: str = "", block_ms: int | None = None, count: int = 200
    ) -> list[RunEvent]:
        """Events strictly after stream id `after` ("" = from the oldest kept); blocks up to block_ms if none."""
        return [
            RunEvent(
                id=eid,
                run_id=run_id,
                kind=fields.get("kind", ""),
                data=json.loads(fields.get("data") or "{}"),
            )
            for eid, fields in read_stream(self.r, self.events_key(run_id), after, block_ms, count)
        ]

    def list_runs(
        self,
        statuses: Iterable[str] = (),
        page_size: int = 50,
        page_token: str = "",
        trainer_id: str = "",
        experiment_id: str = "",
    ) -> tuple[list[RunRecord], str]:
        """Runs newest first; the token is the creation sequence number of the last run returned."""
        steps = self._list_runs_steps(statuses, page_size, page_token, trainer_id, experiment_id)
        try:
            queue = next(steps)
            while True:
                pipe = self.r.pipeline(transaction=False)
                queue(pipe)
                queue = steps.send(pipe.execute())
        except StopIteration as done:
            return done.value

    async def list_runs_async(
        self,
        client: Any,
        statuses: Iterable[str] = (),
        page_size: int = 50,
        page_token: str = "",
        trainer_id: str = "",
        experiment_id: str = "",
    ) -> tuple[list[RunRecord], str]:
        """list_runs over a redis.asyncio client (the gateway's ListRuns, served on its event loop)."""
        steps = self._list_runs_steps(statuses, page_size, page_token, trainer_id, experiment_id)
        try:
            queue = next(steps)
            while True:
                async with client.pipeline(transaction=False) as pipe:
                    queue(pipe)
                    replies = await pipe.execute()
                queue = steps.send(replies)
        except StopIteration as done:
            return done.value

    def _list_runs_steps(
        self, statuses: Iterable[str], page_size: int, page_token: str, trainer_id: str, experiment_id: str
    ) -> Generator[Callable[[Any], None], list, tuple[list[RunRecord], str]]:
        """list_runs without I/O: yields a function that queues one round of commands on a pipeline, is sent
        the replies, and returns the page. The sync and the asyncio clients drive the same steps. Usually two
        rounds: the page's members plus one (whether more follow), then their hashes."""
        # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
        if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) <= 19):
            raise InvalidArgument("malformed page token (pass next_page_token unchanged)", "page_token")
        keys = [f"{self.prefix}runs:status:{s}" for s in sorted(set(statuses))] or [f"{self.prefix}runs"]
        cursor = int(page_token) if page_token else None
        out: list[RunRecord] = []
        while True:
            batch = _merged(keys, (yield _page_query(keys, cursor, page_size + 1)), page_size + 1)
            probe, batch = batch[page_size:], batch[:page_size]
            if not batch:
                return out, ""
            ids = [run_id for run_id, _ in batch]
            replies = yield lambda pipe, ids=ids: [pipe.hgetall(self.run_key(run_id)) for run_id in ids]
            records = {r.id: r for r in (RunRecord.from_hash(v) for v in replies if v)}
            for i, (run_id, seq) in enumerate(batch):
                cursor = seq
                record = records.get(run_id)
                if record is None:
                    continue
                if trainer_id and record.trainer != trainer_id:
                    continue
                if experiment_id and record.experiment_id != experiment_id:
                    continue
                out.append(record)
                if len(out) == page_size:
                    more = i + 1 < len(batch) or bool(probe)
                    return out, (str(cursor) if more else "")
            if not probe:
                return out, ""

    def queued(self) -> list[str]:
        """Runs waiting for a trainer, oldest first."""
        return list(self.r.zrange(f"{self.prefix}queue", 0, -1))

    def runs_in(self, status: str) -> list[str]:
        return list(self.r.zrange(f"{self.prefix}runs:status:{status}", 0, -1))

    def count_by_status(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for status in STATUSES:
            pipe.zcard(f"{self.prefix}runs:status:{status}")
        return {s: n for s, n in zip(STATUSES, pipe.execute(), strict=True) if n}

    def status_changes(self, after: str, block_ms: int) -> tuple[str, list[tuple[str, str]]]:
        """Block until some run changes status (the placer's wake-up); returns (newest id, [(run, status)])."""
        reply = self.r.xread({f"{self.prefix}events": after}, count=1000, block=block_ms)
        if not reply:
            return after, []
        entries = reply[0][1]
        return entries[-1][0], [(f["run_id"], f["status"]) for _, f in entries]

    def latest_status_change(self) -> str:
        entries = self.r.xrevrange(f"{self.prefix}events", count=1)
        return entries[0][0] if entries else "0-0"

    # ---- trainers ----

    def register_trainer(self, record: TrainerRecord, ttl_seconds: float) -> None:
        """Create or renew a trainer's registry entry; it expires `ttl_seconds` after the last renewal."""
        record.heartbeat_at = now_ms()
        key = self.trainer_key(record.id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=record.to_hash())
        pipe.pexpire(key, int(ttl_seconds * 1000))
        pipe.sadd(f"{self.prefix}trainers", record.id)
        pipe.execute()

    def unregister_trainer(self, trainer_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.trainer_key(trainer_id))
        pipe.srem(f"{self.prefix}trainers", trainer_id)
        pipe.execute()

    def trainer_alive(self, trainer_id: str) -> bool:
        return bool(trainer_id) and bool(self.r.exists(self.trainer_key(trainer_id)))

    def get_trainer(self, trainer_id: str) -> TrainerRecord:
        found = self.list_trainers([trainer_id])
        if not found:
            raise NotFound(f"no live trainer {trainer_id!r}", "trainer_id")
        return found[0]

    def trainer_ids(self) -> list[str]:
        return sorted(self.r.smembers(f"{self.prefix}trainers"))

    def list_trainers(self, ids: list[str] | None = None) -> list[TrainerRecord]:
        """Live trainers (registry entry not expired), sorted by id."""
        ids = self.trainer_ids() if ids is None else ids
        pipe = self.r.pipeline(transaction=False)
        self._queue_trainers(pipe, ids)
        return _trainers_from(pipe.execute())

    async def list_trainers_async(self, client: Any) -> list[TrainerRecord]:
        """list_trainers over a redis.asyncio client (GetRun's waiting reason, on the gateway's event loop)."""
        ids = sorted(await client.smembers(f"{self.prefix}trainers"))
        async with client.pipeline(transaction=False) as pipe:
            self._queue_trainers(pipe, ids)
            return _trainers_from(await pipe.execute())

    def _queue_trainers(self, pipe: Any, ids: Iterable[str]) -> None:
        for trainer_id in ids:
            pipe.hgetall(self.trainer_key(trainer_id))
            pipe.smembers(self.slots_key(trainer_id))

    def trainer_slot_runs(self, trainer_id: str) -> set[str]:
        """The runs holding slots of the trainer (a data-parallel run once, however many slots it holds)."""
        return {m for m in self.r.smembers(self.slots_key(trainer_id)) if SLOT_MARK not in m}

    def release_slot(self, trainer_id: str, run_id: str) -> None:
        """Free the slots a run no longer holds (its status moved on elsewhere), leaving the run as it is."""
        key = self.slots_key(trainer_id)
        extra = [m for m in self.r.smembers(key) if m.startswith(run_id + SLOT_MARK)]
        self.r.srem(key, run_id, *extra)

    def forget_trainer(self, trainer_id: str) -> None:
        """Drop a dead trainer's leftovers (its slot set and registry membership) once its runs are reaped."""
        pipe = self.r.pipeline(transaction=True)
        pipe.srem(f"{self.prefix}trainers", trainer_id)
        pipe.delete(self.slots_key(trainer_id))
        pipe.execute()


def _hash_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _json_default(value: Any) -> Any:
    return str(value)


def _lua_json(value: Any) -> str:
    # cjson decodes {} and [] alike, but it must never see null (a truthy value in Lua).
    return json.dumps(value, default=_json_default, allow_nan=False)
