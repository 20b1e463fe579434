"""The run status machine and the Lua scripts that enforce it inside Redis (ARCHITECTURE.md §3).

Every write that touches more than one key runs as one of these scripts, so a crash never leaves half a run
and two gateways can never book the same slot twice. A transition names the statuses it may come from
(`allowed_from`, derived from TRANSITIONS) and the script fails if the run is in another one. The scripts
build key names from the prefix (the layout is in redis_store.py), so this needs a single Redis node.
"""

from __future__ import annotations

STATUSES = ("QUEUED", "PLACED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "LOST", "RESUMING")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# Statuses in which a run may hold a trainer slot (RESUMING only once placed).
ACTIVE = frozenset({"PLACED", "RUNNING", "RESUMING"})
RESUMABLE = frozenset({"FAILED", "CANCELLED", "LOST"})

# The status machine: which statuses each status may move to. RESUMING -> RESUMING is its placement on (or
# release from) a trainer; PLACED -> QUEUED is a placement the trainer refused or could not be reached for;
# RUNNING -> RESUMING is the trainer resuming a run whose process died (killed, out of memory) by itself.
TRANSITIONS: dict[str, frozenset[str]] = {
    "QUEUED": frozenset({"PLACED", "CANCELLED", "FAILED"}),
    "PLACED": frozenset({"RUNNING", "QUEUED", "FAILED", "CANCELLED", "LOST"}),
    "RUNNING": frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "LOST", "RESUMING"}),
    "SUCCEEDED": frozenset(),
    "FAILED": frozenset({"RESUMING"}),
    "CANCELLED": frozenset({"RESUMING"}),
    "LOST": frozenset({"RESUMING", "FAILED", "CANCELLED"}),
    "RESUMING": frozenset({"RESUMING", "RUNNING", "FAILED", "CANCELLED", "LOST"}),
}

# Event kinds in run:{id}:events and their `data` (JSON):
#   status      {status, previous, trainer_id, reason, error?: {code, field, message}}
#   started     the engine's on_start info (trainable_parameters, backend, resume_step, ...)
#   step        StepMetrics fields;  eval  EvalMetrics fields
#   checkpoint  {step, path};  log  {message};  result  RunResult fields (final metrics)
#   progress    {phase, done, total, unit}: evaluation / scoring outside the training steps
EVENT_KINDS = ("status", "started", "step", "eval", "checkpoint", "log", "result", "progress")


def allowed_from(to: str) -> list[str]:
    """The statuses a run may be in to become `to`, in STATUSES order."""
    return [s for s in STATUSES if to in TRANSITIONS[s]]


# ---- Lua ----------------------------------------------------------------------------------------------
# Options arrive as one JSON argument; absent keys are left out (cjson turns JSON null into a truthy value).

# A run books one slot per data-parallel worker (spec.workers): its id plus `id#2` .. `id#N` in the trainer's
# slot set, all or none, so SCARD stays the slots taken. `slots_held` on the run says how many to release.
_CHECK_CLAIM = """
local function slot_weight(spec_json)
  local ok, spec = pcall(cjson.decode, spec_json or '{}')
  local n = ok and type(spec) == 'table' and tonumber(spec.workers) or 1
  if not n or n < 1 then n = 1 end
  return math.floor(n)
end
local function check_claim(p, id, trainer, weight)
  local tkey = p .. 'trainer:' .. trainer
  if redis.call('EXISTS', tkey) == 0 then return 'trainer-gone' end
  local slots = tonumber(redis.call('HGET', tkey, 'slots') or '0')
  local rkey = tkey .. ':runs'
  if redis.call('SISMEMBER', rkey, id) == 0 and redis.call('SCARD', rkey) + weight > slots then return 'no-slot' end
  return nil
end
local function book(p, id, trainer, weight)
  local rkey = p .. 'trainer:' .. trainer .. ':runs'
  redis.call('SADD', rkey, id)
  for k = 2, weight do redis.call('SADD', rkey, id .. '#' .. k) end
  redis.call('HSET', p .. 'run:' .. id, 'slots_held', weight)
end
local function unbook(p, id, trainer)
  local rkey = p .. 'trainer:' .. trainer .. ':runs'
  local held = tonumber(redis.call('HGET', p .. 'run:' .. id, 'slots_held') or '1') or 1
  redis.call('SREM', rkey, id)
  for k = 2, held do redis.call('SREM', rkey, id .. '#' .. k) end
end
"""

CREATE = (
    _CHECK_CLAIM
    + """
-- ARGV: prefix, run id, options {fields, claim?, now, maxlen, reason}
local p, id = ARGV[1], ARGV[2]
local o = cjson.decode(ARGV[3])
local key = p .. 'run:' .. id
if redis.call('EXISTS', key) == 1 then return {'exists'} end
local weight = slot_weight(o.fields.spec)
if o.claim then
  local refused = check_claim(p, id, o.claim, weight)
  if refused then return {refused, o.claim} end
end
local seq = redis.call('INCR', p .. 'runs:seq')
local status = o.claim and 'PLACED' or 'QUEUED'
local hset = {'status', status, 'seq', seq, 'created_at', o.now, 'updated_at', o.now, 'trainer', o.claim or ''}
for k, v in pairs(o.fields) do table.insert(hset, k); table.insert(hset, v) end
redis.call('HSET', key, unpack(hset))
redis.call('ZADD', p .. 'runs', seq, id)
redis.call('ZADD', p .. 'runs:status:' .. status, seq, id)
local ekey = key .. ':events'
local last = redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', 'status', 'data',
  cjson.encode({status = 'QUEUED', previous = '', trainer_id = '', reason = o.reason}))
if o.claim then
  book(p, id, o.claim, weight)
  last = redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', 'status', 'data',
    cjson.encode({status = 'PLACED', previous = 'QUEUED', trainer_id = o.claim, reason = 'started on its trainer'}))
else
  redis.call('ZADD', p .. 'queue', seq, id)
end
redis.call('XADD', p .. 'events', 'MAXLEN', '~', 10000, '*', 'run_id', id, 'status', status)
redis.call('HSET', key, 'last_event_id', last)
return {'ok', tostring(seq), last}
"""
)

TRANSITION = (
    _CHECK_CLAIM
    + """
-- ARGV: prefix, run id, options {to, from[], expect_trainer?, expect_attempt?, claim?, release?, queue?, set{},
--        del[], events[], reason, error?, now, maxlen}
local p, id = ARGV[1], ARGV[2]
local o = cjson.decode(ARGV[3])
local key = p .. 'run:' .. id
local cur = redis.call('HGET', key, 'status')
if not cur then return {'missing'} end
local allowed = false
for _, s in ipairs(o.from) do if s == cur then allowed = true end end
if not allowed then return {'status', cur} end
local trainer = redis.call('HGET', key, 'trainer') or ''
if o.expect_trainer and o.expect_trainer ~= trainer then return {'trainer', trainer} end
local attempt = redis.call('HGET', key, 'attempt') or '0'
if o.expect_attempt and o.expect_attempt ~= attempt then return {'attempt', attempt} end
local weight = slot_weight(redis.call('HGET', key, 'spec'))
if o.claim then
  local refused = check_claim(p, id, o.claim, weight)
  if refused then return {refused, o.claim} end
end
if o.release and trainer ~= '' then unbook(p, id, trainer) end
if o.claim then book(p, id, o.claim, weight) end
local seq = redis.call('HGET', key, 'seq')
if o.to ~= cur then
  redis.call('ZREM', p .. 'runs:status:' .. cur, id)
  redis.call('ZADD', p .. 'runs:status:' .. o.to, seq, id)
end
if o.queue == 'add' then redis.call('ZADD', p .. 'queue', seq, id) end
if o.queue == 'remove' then redis.call('ZREM', p .. 'queue', id) end
local hset = {'status', o.to, 'updated_at', o.now}
for k, v in pairs(o.set) do table.insert(hset, k); table.insert(hset, v) end
redis.call('HSET', key, unpack(hset))
if #o.del > 0 then redis.call('HDEL', key, unpack(o.del)) end
local ekey = key .. ':events'
local last = ''
for _, e in ipairs(o.events) do
  last = redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', e.kind, 'data', e.data)
end
local ev = {status = o.to, previous = cur, trainer_id = redis.call('HGET', key, 'trainer') or '', reason = o.reason}
if o.error then ev.error = o.error end
last = redis.call('XADD', ekey, 'MAXLEN', '~', o.maxlen, '*', 'kind', 'status', 'data', cjson.encode(ev))
redis.call('XADD', p .. 'events', 'MAXLEN', '~', 10000, '*', 'run_id', id, 'status', o.to)
redis.call('HSET', key, 'last_event_id', last)
return {'ok', cur, last}
"""
)

APPEND = """
-- ARGV: prefix, run id, kind, data, maxlen, attempt, now, progress {field: value}, seq
-- seq > 0 numbers the events of one attempt (1, 2, ...): one already recorded (a retry whose first reply was
-- lost, a buffer flushed twice) is answered 'dup' and not appended again. `event_seq` holds 'attempt:seq'.
local p, id = ARGV[1], ARGV[2]
local key = p .. 'run:' .. id
local cur = redis.call('HGET', key, 'status')
if not cur then return {'missing'} end
if cur ~= 'RUNNING' and cur ~= 'PLACED' and cur ~= 'RESUMING' then return {'status', cur} end
if (redis.call('HGET', key, 'attempt') or '0') ~= ARGV[6] then return {'attempt', cur} end
local seq = tonumber(ARGV[9] or '0')
if seq > 0 then
  local a, last = string.match(redis.call('HGET', key, 'event_seq') or '', '^(%d+):(%d+)$')
  if a == ARGV[6] and seq <= tonumber(last) then return {'dup', cur} end
end
local eid = redis.call('XADD', key .. ':events', 'MAXLEN', '~', ARGV[5], '*', 'kind', ARGV[3], 'data', ARGV[4])
local hset = {'last_event_id', eid, 'updated_at', ARGV[7]}
if seq > 0 then table.insert(hset, 'event_seq'); table.insert(hset, ARGV[6] .. ':' .. seq) end
for k, v in pairs(cjson.decode(ARGV[8])) do table.insert(hset, k); table.insert(hset, v) end
redis.call('HSET', key, unpack(hset))
return {'ok', eid}
"""
