"""follow_stream (the body of WatchRun and WatchExperiment) against a real Redis: a watch ends only after it
sent the subject's final event, even when the subject ends in the instant between the watch's reads."""

from __future__ import annotations

import asyncio

from services.common.watch import AsyncRedis, follow_stream


async def _end_the_moment_each_event_is_seen(url: str, prefix: str, subjects: int) -> list[list[str]]:
    """Per subject: one event, then, as soon as the watch has it, the final status and its event in one
    MULTI (as the stores write them). The watch's next read of the stream is in flight at that moment, so the
    final write lands between its reads: the race CI hit once under load, made to happen every time."""
    events = AsyncRedis(url)
    writer = events.client()
    seen: list[list[str]] = []
    pending: list[asyncio.Future] = []
    try:
        for n in range(subjects):
            status_key, events_key = f"{prefix}s{n}", f"{prefix}s{n}:events"
            await writer.hset(status_key, "status", "RUNNING")
            await writer.xadd(events_key, {"kind": "step", "data": "{}"})
            kinds: list[str] = []
            async for entry in follow_stream(events, status_key, events_key, "", f"s{n}", "id"):
                kinds.append(entry.kind)
                if entry.kind == "step":
                    pipe = writer.pipeline(transaction=True)
                    pipe.hset(status_key, "status", "SUCCEEDED")
                    pipe.xadd(events_key, {"kind": "status", "data": '{"status": "SUCCEEDED"}'})
                    # A task: it runs once the watch has resumed and sent its next read.
                    pending.append(asyncio.ensure_future(pipe.execute()))
            seen.append(kinds)
        await asyncio.gather(*pending)
    finally:
        await events.aclose()
    return seen


def test_a_watch_sends_the_final_event_when_the_subject_ends_between_its_reads(redis_url, redis_prefix):
    seen = asyncio.run(_end_the_moment_each_event_is_seen(redis_url, redis_prefix, subjects=30))
    assert seen == [["step", "status"]] * 30
