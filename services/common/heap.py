"""Keep the cyclic garbage collector off the long-lived heap of a server process.

A full (generation 2) collection walks every tracked object. After the gateway has imported transformers and
torch for a tokenizer it holds about 320,000 of them, and one full collection then took 290 ms on a 2-core VM:
every call in flight waited that long (bench/load.py: GetRun p99 110-340 ms at 200 clients, against p50 8 ms).
What a server imports and builds once at start lives until it exits, so it is frozen (moved to the permanent
generation, never scanned again); collections then walk only what requests make.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_long_lived(after: str) -> None:
    """Collect what is garbage now, then freeze everything left. Call it once a process has done its one-time
    setup (`after` says which, for the log); again after a later one-time load (a tokenizer's imports)."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "long-lived heap frozen",
        extra={
            "after": after,
            "objects": gc.get_freeze_count(),
            "ms": round(1000 * (time.perf_counter() - start)),
        },
    )
