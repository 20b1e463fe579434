"""Following a run's event stream in Redis: the body of WatchRun in both the trainer and the gateway.

Resumable by construction: events are read strictly after the id the client last saw, straight from the
run's Redis stream, so a watcher can reconnect to any gateway (or after a restart) and continue. The watch
ends once the run is SUCCEEDED, FAILED or CANCELLED and every event up to that point has been sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from services.common.records import RunEvent
from services.common.redis_store import RunStore, check_event_id
from services.common.status_machine import TERMINAL


def follow_run(
    store: RunStore,
    run_id: str,
    after_event_id: str = "",
    is_active: Callable[[], bool] = lambda: True,
    poll_ms: int = 1000,
) -> Iterator[RunEvent]:
    check_event_id(after_event_id)
    store.status_of(run_id)  # NotFound before the stream starts
    last = after_event_id
    saw_end = False
    while is_active():
        # After a terminal status, look without blocking: a resumed run continues, a finished one ends now.
        events = store.read_events(run_id, last, block_ms=None if saw_end else poll_ms)
        for event in events:
            yield event
            last = event.id
            saw_end = event.kind == "status" and event.data.get("status") in TERMINAL
        if not events:
            if store.status_of(run_id) in TERMINAL:
                return
            saw_end = False
