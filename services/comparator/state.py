"""Experiments in Redis: the records a comparator (any replica, or its restart) needs to drive an experiment
to its end, and the event stream WatchExperiment follows.

Key layout (after the shared prefix, next to the run keys of services/common/redis_store.py):

    exp:{id}               hash: id, kind, name, status, request (JSON), total_runs, timestamps (ms), error, seq
    exp:{id}:runs          zset of the experiment's run ids, scored by submission order
    exp:{id}:cells         hash (comparison): "<arm>/<seed>" -> Cell JSON (which run trains it, what came of it)
    exp:{id}:trials        hash (study): zero-padded trial number -> Trial JSON (params, state, values, run)
    exp:{id}:local         hash: local run id -> LocalRun JSON (runs of the PyTorch backend, see backends/)
    exp:{id}:events        stream, capped: fields `kind` (status|run_submitted|run_finished|trial|log), `data`
    exp:{id}:lease         string with a TTL: the id of the comparator driving it (renewed every pass)
    experiments            zset of every experiment id by creation sequence (newest = highest)
    experiments:seq        counter behind those scores
    experiments:active     set of experiments not yet ended (what a starting comparator looks for)

Every write is one Lua script that checks the experiment's status (and, from a driver, that it still holds
the lease), then writes the hash, its members, the run index and the events together: a comparator killed
at any point leaves either all of a step or none of it, and a driver that lost its lease writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.identity import ANONYMOUS, Principal
from services.common.records import now_ms
from services.common.redis_store import read_stream

STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
KINDS = ("comparison", "study")
EVENT_KINDS = ("status", "run_submitted", "run_finished", "trial", "log")
EVENTS_MAXLEN = 10000

_CREATE = """
-- ARGV: prefix, id, options {fields{}, members[{h, f, v}], now}
local p, id = ARGV[1], ARGV[2]
local o = cjson.decode(ARGV[3])
local key = p .. 'exp:' .. id
if redis.call('EXISTS', key) == 1 then return {'exists'} end
local seq = redis.call('INCR', p .. 'experiments:seq')
local hset = {'status', 'RUNNING', 'seq', seq, 'created_at', o.now, 'updated_at', o.now}
for k, v in pairs(o.fields) do table.insert(hset, k); table.insert(hset, v) end
redis.call('HSET', key, unpack(hset))
for _, m in ipairs(o.members) do redis.call('HSET', key .. ':' .. m.h, m.f, m.v) end
redis.call('ZADD', p .. 'experiments', seq, id)
redis.call('SADD', p .. 'experiments:active', id)
redis.call('XADD', key .. ':events', 'MAXLEN', '~', o.maxlen, '*', 'kind', 'status', 'data',
  cjson.encode({status = 'RUNNING', previous = ''}))
return {'ok', tostring(seq)}
"""

_UPDATE = """
-- ARGV: prefix, id, options {owner?, from[]?, to?, set{}, del[], members[{h, f, v}], runs[], events[{kind, data}],
--        reason, now, maxlen}
local p, id = ARGV[1], ARGV[2]
local o = cjson.decode(ARGV[3])
local key = p .. 'exp:' .. id
local cur = redis.call('HGET', key, 'status')
if not cur then return {'missing'} end
if o.owner and redis.call('GET', key .. ':lease') ~= o.owner then return {'lease', cur} end
if o.from then
  local allowed = false
  for _, s in ipairs(o.from) do if s == cur then allowed = true end end
  if not allowed then return {'status', cur} end
end
local hset = {'updated_at', o.now}
if o.to then table.insert(hset, 'status'); table.insert(hset, o.to) end
for k, v in pairs(o.set) do table.insert(hset, k); table.insert(hset, v) end
redis.call('HSET', key, unpack(hset))
if #o.del > 0 then redis.call('HDEL', key, unpack(o.del)) end
for _, m in ipairs(o.members) do redis.call('HSET', key .. ':' .. m.h, m.f, m.v) end
for _, r in ipairs(o.runs) do
  if not redis.call('ZSCORE', key .. ':runs', r) then
    redis.call('ZADD', key .. ':runs', redis.call('HINCRBY', key, 'run_seq', 1), r)
  end
end
local ekey = key .. ':events'
for _, e in ipairs(o.events) do
  redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', e.kind, 'data', e.data)
end
if o.to and o.to ~= cur then
  redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', 'status', 'data',
    cjson.encode({status = o.to, previous = cur, reason = o.reason}))
  if o.to == 'SUCCEEDED' or o.to == 'FAILED' or o.to == 'CANCELLED' then
    redis.call('SREM', p .. 'experiments:active', id)
  end
end
return {'ok', cur}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# ---- records ------------------------------------------------------------------------------------------


@dataclass
class ExperimentRecord:
    """An experiment as stored in its hash. `request` is the Comparison/StudyRequest as a dict."""

    id: str
    kind: str
    name: str = ""
    status: str = "RUNNING"
    request: dict[str, Any] = field(default_factory=dict)
    total_runs: int = 0
    created_at: int = 0
    updated_at: int = 0
    finished_at: int = 0
    error: dict[str, str] | None = None  # {code, field, message}
    seq: int = 0
    caller: str = ANONYMOUS  # the user it runs for
    grant: str = ""  # the gateway's grant to act for them (identity.py); never sent to clients

    @property
    def principal(self) -> Principal:
        return Principal(self.caller, self.grant)

    @classmethod
    def from_hash(cls, values: dict[str, str]) -> ExperimentRecord:
        return cls(
            id=values["id"],
            kind=values.get("kind", ""),
            name=values.get("name", ""),
            status=values.get("status", "RUNNING"),
            request=json.loads(values.get("request") or "{}"),
            total_runs=int(values.get("total_runs") or 0),
            created_at=int(values.get("created_at") or 0),
            updated_at=int(values.get("updated_at") or 0),
            finished_at=int(values.get("finished_at") or 0),
            error=json.loads(values["error"]) if values.get("error") else None,
            seq=int(values.get("seq") or 0),
            caller=values.get("caller") or ANONYMOUS,
            grant=values.get("grant", ""),
        )


@dataclass
class Cell:
    """One arm x seed of a comparison and the run that trains it."""

    arm: str
    seed: int
    backend: str = "mlx"
    run_id: str = ""
    state: str = "PENDING"  # PENDING (not submitted) | SUBMITTED | DONE
    run_status: str = ""  # the run's final status once DONE
    error: dict[str, str] | None = None
    budget_stopped: bool = False  # stopped by the time budget (reported from its last evaluation)

    @property
    def key(self) -> str:
        return cell_key(self.arm, self.seed)


def cell_key(arm: str, seed: int) -> str:
    return f"{arm}/{seed}"


@dataclass
class TrialRecord:
    """One configuration of a study: suggested, trained, and what came of it."""

    number: int  # 0-based, in the order the optimizer suggested it
    params: dict[str, Any]
    status: str = "RUNNING"  # RUNNING | COMPLETE | FAILED | PRUNED (TrialStatus names)
    values: dict[str, float] = field(default_factory=dict)  # objective name -> value
    run_id: str = ""
    error: dict[str, str] | None = None
    curve: list[list[float]] = field(default_factory=list)  # [[step, valid loss], ...] from its evaluations
    pruned_step: int = 0
    budget_stopped: bool = False
    source: str = ""  # the optimizer's "design" or "model"

    @property
    def key(self) -> str:
        return trial_key(self.number)


def trial_key(number: int) -> str:
    return f"{number:05d}"


@dataclass
class LocalRun:
    """A run the comparator executes itself (the PyTorch backend): no trainer, so no `run:{id}` record."""

    id: str
    spec: dict[str, Any]
    backend: str = "torch"
    status: str = "QUEUED"  # QUEUED | RUNNING | SUCCEEDED | FAILED | CANCELLED
    run_dir: str = ""
    pid: int = 0
    host: str = ""
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    error: dict[str, str] | None = None
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentEvent:
    id: str
    experiment_id: str
    kind: str
    data: dict[str, Any]

    @property
    def time_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


class LeaseLost(FailedPrecondition):
    """This comparator no longer drives the experiment (another replica took it over)."""


class StatusRefused(FailedPrecondition):
    def __init__(self, message: str, current: str):
        super().__init__(message)
        self.current = current


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


def _member(h: str, f: str, value: Any) -> dict[str, str]:
    return {"h": h, "f": f, "v": _json(asdict(value) if hasattr(value, "__dataclass_fields__") else value)}


# ---- the store ----------------------------------------------------------------------------------------


class ExperimentStore:
    def __init__(self, client: redis.Redis, prefix: str = "peftlab:"):
        self.r = client
        self.prefix = prefix
        self._create = client.register_script(_CREATE)
        self._update = client.register_script(_UPDATE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, experiment_id: str, suffix: str = "") -> str:
        return f"{self.prefix}exp:{experiment_id}" + (f":{suffix}" if suffix else "")

    # ---- writes ----

    def create(
        self, record: ExperimentRecord, members: Iterable[tuple[str, str, Any]] = ()
    ) -> ExperimentRecord:
        fields = {
            "id": record.id,
            "kind": record.kind,
            "name": record.name,
            "request": _json(record.request),
            "total_runs": str(record.total_runs),
            "caller": record.caller,
            "grant": record.grant,
        }
        options = {
            "fields": fields,
            "members": [_member(h, f, v) for h, f, v in members],
            "now": now_ms(),
            "maxlen": EVENTS_MAXLEN,
        }
        out = self._create(args=[self.prefix, record.id, _json(options)])
        if out[0] == "exists":
            raise FailedPrecondition(f"experiment {record.id} already exists", "experiment_id")
        return self.get(record.id)

    def update(
        self,
        experiment_id: str,
        *,
        owner: str = "",
        only_from: Iterable[str] | None = None,
        to: str = "",
        set_fields: dict[str, Any] | None = None,
        delete: Iterable[str] = (),
        members: Iterable[tuple[str, str, Any]] = (),
        runs: Iterable[str] = (),
        events: Iterable[tuple[str, dict[str, Any]]] = (),
        reason: str = "",
    ) -> str:
        """One atomic change of an experiment; returns its status before. With `owner`, only while that
        comparator holds the lease (LeaseLost otherwise); with `only_from`, only from those statuses."""
        options: dict[str, Any] = {
            "set": {k: v if isinstance(v, str) else _json(v) for k, v in (set_fields or {}).items()},
            "del": list(delete),
            "members": [_member(h, f, v) for h, f, v in members],
            "runs": list(runs),
            "events": [{"kind": k, "data": _json(d)} for k, d in events],
            "reason": reason,
            "now": now_ms(),
            "maxlen": EVENTS_MAXLEN,
        }
        if owner:
            options["owner"] = owner
        if only_from is not None:
            options["from"] = list(only_from)
        if to:
            options["to"] = to
        out = self._update(args=[self.prefix, experiment_id, _json(options)])
        if out[0] == "missing":
            raise NotFound(f"no experiment {experiment_id!r}", "experiment_id")
        if out[0] == "lease":
            raise LeaseLost(f"experiment {experiment_id} is driven by another comparator now")
        if out[0] == "status":
            raise StatusRefused(f"experiment {experiment_id} is {out[1]}", out[1])
        return out[1]

    # ---- leases ----

    def acquire(self, experiment_id: str, owner: str, ttl_seconds: float) -> bool:
        return bool(self.r.set(self.key(experiment_id, "lease"), owner, nx=True, px=int(ttl_seconds * 1000)))

    def renew(self, experiment_id: str, owner: str, ttl_seconds: float) -> bool:
        key = self.key(experiment_id, "lease")
        return bool(self._renew(keys=[key], args=[owner, int(ttl_seconds * 1000)]))

    def release(self, experiment_id: str, owner: str) -> None:
        self._release(keys=[self.key(experiment_id, "lease")], args=[owner])

    def lease_holder(self, experiment_id: str) -> str:
        return self.r.get(self.key(experiment_id, "lease")) or ""

    # ---- reads ----

    def get(self, experiment_id: str) -> ExperimentRecord:
        values = self.r.hgetall(self.key(experiment_id))
        if not values:
            raise NotFound(f"no experiment {experiment_id!r}", "experiment_id")
        return ExperimentRecord.from_hash(values)

    def status_of(self, experiment_id: str) -> str:
        status = self.r.hget(self.key(experiment_id), "status")
        if status is None:
            raise NotFound(f"no experiment {experiment_id!r}", "experiment_id")
        return status

    def cells(self, experiment_id: str) -> dict[str, Cell]:
        raw = self.r.hgetall(self.key(experiment_id, "cells"))
        return {k: Cell(**json.loads(v)) for k, v in sorted(raw.items())}

    def trials(self, experiment_id: str) -> list[TrialRecord]:
        raw = self.r.hgetall(self.key(experiment_id, "trials"))
        return [TrialRecord(**json.loads(raw[k])) for k in sorted(raw)]

    def local_runs(self, experiment_id: str) -> dict[str, LocalRun]:
        raw = self.r.hgetall(self.key(experiment_id, "local"))
        return {k: LocalRun(**json.loads(v)) for k, v in raw.items()}

    def run_ids(self, experiment_id: str) -> list[str]:
        return list(self.r.zrange(self.key(experiment_id, "runs"), 0, -1))

    def active(self) -> list[str]:
        return sorted(self.r.smembers(f"{self.prefix}experiments:active"))

    def list(self, page_size: int, page_token: str = "") -> tuple[list[ExperimentRecord], str]:
        """Newest first; the token is the creation sequence number of the last experiment returned."""
        if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) <= 19):
            raise InvalidArgument("malformed page token (pass next_page_token unchanged)", "page_token")
        top = f"({page_token}" if page_token else "+inf"
        rows = self.r.zrevrangebyscore(
            f"{self.prefix}experiments", top, "-inf", start=0, num=page_size + 1, withscores=True
        )
        pipe = self.r.pipeline(transaction=False)
        for experiment_id, _ in rows[:page_size]:
            pipe.hgetall(self.key(experiment_id))
        records = [ExperimentRecord.from_hash(v) for v in pipe.execute() if v]
        token = str(int(rows[page_size - 1][1])) if len(rows) > page_size else ""
        return records, token

    def read_events(
        self, experiment_id: str, after: str = "", block_ms: int | None = None, count: int = 200
    ) -> list[ExperimentEvent]:
        return [
            ExperimentEvent(
                id=eid,
                experiment_id=experiment_id,
                kind=fields.get("kind", ""),
                data=json.loads(fields.get("data") or "{}"),
            )
            for eid, fields in read_stream(self.r, self.key(experiment_id, "events"), after, block_ms, count)
        ]
