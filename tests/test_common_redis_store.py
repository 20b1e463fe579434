"""The Redis store against a real server: status machine, atomic slot claims, capped event streams, paging,
the trainer registry's TTL, and state surviving a Redis restart (AOF)."""

from __future__ import annotations

import time

import pytest

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.records import RunRecord, TrainerRecord
from services.common.redis_server import start_redis
from services.common.redis_store import RunStore, TrainerGone, TransitionRefused
from services.common.status_machine import STATUSES, TRANSITIONS


def _trainer(store: RunStore, trainer_id: str = "t1", slots: int = 1, ttl: float = 30.0) -> TrainerRecord:
    record = TrainerRecord(id=trainer_id, address="127.0.0.1:1", slots=slots, hardware={"device_kind": "cpu"})
    store.register_trainer(record, ttl)
    return record


def test_create_queues_the_run_with_a_status_event(store):
    record = store.create_run(RunRecord(id="r1", spec={"rank": 4}, name="first"))
    assert record.status == "QUEUED"
    assert record.spec == {"rank": 4}
    assert store.queued() == ["r1"]
    events = store.read_events("r1")
    assert [(e.kind, e.data["status"]) for e in events] == [("status", "QUEUED")]
    assert record.last_event_id == events[-1].id


def test_create_twice_is_refused(store):
    store.create_run(RunRecord(id="r1"))
    with pytest.raises(TransitionRefused):
        store.create_run(RunRecord(id="r1"))


def test_status_machine_is_enforced(store):
    store.create_run(RunRecord(id="r1"))
    with pytest.raises(TransitionRefused) as refused:
        store.transition("r1", "SUCCEEDED")
    assert refused.value.current == "QUEUED"
    assert store.status_of("r1") == "QUEUED"
    with pytest.raises(NotFound):
        store.transition("nope", "PLACED")
    # Every status the machine names exists, and SUCCEEDED is final.
    assert set(TRANSITIONS) == set(STATUSES)
    assert TRANSITIONS["SUCCEEDED"] == frozenset()


def test_claim_respects_slots_and_liveness(store):
    _trainer(store, "t1", slots=1)
    store.create_run(RunRecord(id="a"))
    store.create_run(RunRecord(id="b"))
    store.transition("a", "PLACED", claim="t1", queue="remove", set_fields={"trainer": "t1"})
    with pytest.raises(ResourceExhausted):
        store.transition("b", "PLACED", claim="t1", queue="remove", set_fields={"trainer": "t1"})
    # The refused transition wrote nothing.
    assert store.status_of("b") == "QUEUED" and store.queued() == ["b"]
    with pytest.raises(TrainerGone):
        store.transition("b", "PLACED", claim="ghost", set_fields={"trainer": "ghost"})
    assert store.trainer_slot_runs("t1") == {"a"}
    # Finishing releases the slot; the run keeps its trainer for the record.
    store.transition("a", "RUNNING", expect_trainer="t1")
    store.transition("a", "SUCCEEDED", release=True, set_fields={"metrics": {"steps": 3}})
    assert store.trainer_slot_runs("t1") == set()
    done = store.get_run("a")
    assert done.trainer == "t1" and done.metrics == {"steps": 3}
    store.transition("b", "PLACED", claim="t1", queue="remove", set_fields={"trainer": "t1"})


def test_create_with_claim_is_placed_and_all_or_nothing(store):
    _trainer(store, "t1", slots=1)
    placed = store.create_run(RunRecord(id="a"), claim="t1")
    assert placed.status == "PLACED" and placed.trainer == "t1"
    assert [e.data["status"] for e in store.read_events("a")] == ["QUEUED", "PLACED"]
    with pytest.raises(ResourceExhausted):
        store.create_run(RunRecord(id="b"), claim="t1")
    with pytest.raises(NotFound):
        store.get_run("b")
    assert store.queued() == []


def test_events_append_only_for_the_current_attempt(store):
    _trainer(store)
    store.create_run(RunRecord(id="a", attempt=0), claim="t1")
    store.transition("a", "RUNNING", set_fields={"attempt": 1})
    eid = store.append_event(
        "a", "step", {"step": 1, "train_loss": 2.5}, attempt=1, progress={"step": 1, "train_loss": 2.5}
    )
    assert eid is not None
    assert store.append_event("a", "step", {"step": 2}, attempt=0) is None  # a stale child
    record = store.get_run("a")
    assert record.progress["step"] == 1 and record.last_event_id == eid
    store.transition("a", "CANCELLED", release=True)
    assert store.append_event("a", "step", {"step": 3}, attempt=1) is None


def test_a_numbered_event_is_recorded_once_per_attempt(store):
    _trainer(store)
    store.create_run(RunRecord(id="a"), claim="t1")
    store.transition("a", "RUNNING", set_fields={"attempt": 1})
    first = store.append_event("a", "step", {"step": 1}, attempt=1, seq=1)
    assert first and store.append_event("a", "step", {"step": 1}, attempt=1, seq=1) == ""  # a retry
    assert store.append_event("a", "step", {"step": 2}, attempt=1, seq=2)
    # The next attempt numbers its events from 1 again.
    store.transition("a", "RESUMING", set_fields={"attempt": 2})
    assert store.append_event("a", "step", {"step": 1}, attempt=2, seq=1)
    assert [e.data["step"] for e in store.read_events("a") if e.kind == "step"] == [1, 2, 1]


def test_an_outcome_write_from_a_stale_attempt_is_refused(store):
    _trainer(store)
    store.create_run(RunRecord(id="a"), claim="t1")
    store.transition("a", "RUNNING", set_fields={"attempt": 1})
    # Lost and resumed on the same trainer as attempt 2 (the Redis outage of issue 12).
    store.transition("a", "LOST", release=True)
    store.transition("a", "RESUMING", claim="t1", set_fields={"trainer": "t1"})
    store.transition("a", "RUNNING", expect_attempt=1, set_fields={"attempt": 2})
    with pytest.raises(TransitionRefused) as refused:
        store.transition(
            "a", "SUCCEEDED", only_from=["RUNNING"], expect_trainer="t1", expect_attempt=1, release=True
        )
    assert refused.value.current == "2" and "stale" in str(refused.value)
    record = store.get_run("a")
    assert record.status == "RUNNING" and record.attempt == 2 and store.trainer_slot_runs("t1") == {"a"}
    store.transition("a", "SUCCEEDED", expect_trainer="t1", expect_attempt=2, release=True)
    assert store.status_of("a") == "SUCCEEDED"


def test_event_stream_is_capped_and_resumable(redis_url, redis_prefix):
    store = RunStore.from_url(redis_url, redis_prefix, events_maxlen=50)
    _trainer(store)
    store.create_run(RunRecord(id="a"), claim="t1")
    store.transition("a", "RUNNING", set_fields={"attempt": 1})
    for step in range(1, 501):
        store.append_event("a", "step", {"step": step}, attempt=1)
    assert store.r.xlen(store.events_key("a")) < 200  # MAXLEN ~ trims in whole macro nodes
    events = store.read_events("a", count=1000)
    middle = events[len(events) // 2]
    after = store.read_events("a", middle.id, count=1000)
    assert [e.data["step"] for e in after] == list(range(middle.data["step"] + 1, 501))
    with pytest.raises(InvalidArgument) as bad:
        store.read_events("a", "../x")
    assert bad.value.field == "after_event_id"


def test_list_runs_pages_newest_first_with_status_filter(store):
    _trainer(store, slots=100)
    for i in range(7):
        store.create_run(RunRecord(id=f"r{i}"))
    for i in (1, 3, 5):
        store.transition(f"r{i}", "CANCELLED", queue="remove")
    page, token = store.list_runs(page_size=3)
    assert [r.id for r in page] == ["r6", "r5", "r4"] and token
    page2, token2 = store.list_runs(page_size=3, page_token=token)
    assert [r.id for r in page2] == ["r3", "r2", "r1"]
    page3, token3 = store.list_runs(page_size=3, page_token=token2)
    assert [r.id for r in page3] == ["r0"] and token3 == ""
    cancelled, _ = store.list_runs(statuses=["CANCELLED"], page_size=10)
    assert [r.id for r in cancelled] == ["r5", "r3", "r1"]
    both, _ = store.list_runs(statuses=["CANCELLED", "QUEUED"], page_size=10)
    assert [r.id for r in both] == [f"r{i}" for i in range(6, -1, -1)]
    with pytest.raises(InvalidArgument):
        store.list_runs(page_token="abc")
    assert store.count_by_status() == {"QUEUED": 4, "CANCELLED": 3}


def test_list_runs_over_asyncio_pages_like_the_sync_client(store, redis_url):
    """The gateway's ListRuns (redis.asyncio) and the trainer's (sync) drive the same steps: same pages, same
    tokens, with filters that skip runs, a page that ends exactly at the last run, and a run whose hash is gone."""
    import asyncio

    import redis.asyncio

    for i in range(9):
        store.create_run(RunRecord(id=f"r{i}", experiment_id="e1" if i % 3 == 0 else ""))
    store.r.delete(store.run_key("r4"))  # listed in the zset, its hash deleted

    def pages(list_page, **query) -> list[tuple[list[str], str]]:
        out, token = [], ""
        while True:
            records, token = list_page(page_token=token, **query)
            out.append(([r.id for r in records], token))
            if not token:
                return out

    async def async_pages(**query) -> list[tuple[list[str], str]]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        out, token = [], ""
        try:
            while True:
                records, token = await store.list_runs_async(client, page_token=token, **query)
                out.append(([r.id for r in records], token))
                if not token:
                    return out
        finally:
            await client.aclose()

    for query in (
        {"page_size": 3},
        {"page_size": 8},
        {"page_size": 2, "experiment_id": "e1"},
        {"page_size": 50},
    ):
        expected = pages(store.list_runs, **query)
        assert asyncio.run(async_pages(**query)) == expected, query
    assert pages(store.list_runs, page_size=8) == [(["r8", "r7", "r6", "r5", "r3", "r2", "r1", "r0"], "")]
    two = pages(store.list_runs, page_size=2, experiment_id="e1")
    assert [ids for ids, _ in two] == [["r6", "r3"], ["r0"]] and two[0][1] and not two[1][1]


def test_trainer_registry_expires_without_heartbeat(store):
    _trainer(store, "t1", ttl=0.3)
    assert [t.id for t in store.list_trainers()] == ["t1"]
    time.sleep(0.5)
    assert store.list_trainers() == []
    assert not store.trainer_alive("t1")
    assert store.trainer_ids() == ["t1"]  # kept until the reaper forgets it
    store.forget_trainer("t1")
    assert store.trainer_ids() == []


def test_state_survives_a_redis_restart(tmp_path):
    server = start_redis(tmp_path / "redis")
    try:
        store = RunStore.from_url(server.url, "p:")
        store.create_run(RunRecord(id="keep", spec={"iters": 5}))
        store.close()
    finally:
        server.stop()
    server = start_redis(tmp_path / "redis", port=server.port)
    try:
        store = RunStore.from_url(server.url, "p:")
        record = store.get_run("keep")
        assert record.spec == {"iters": 5} and record.status == "QUEUED"
        assert store.queued() == ["keep"]
        store.close()
    finally:
        server.stop()
