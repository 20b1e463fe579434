"""Scaling benchmark: the gateway's placement latency with 2 and 8 registered trainers.

Each sample submits one run to a real Redis (the embedded server) and times the gateway's placement pass
(`Placer.place_now`: read the queue and the registry, choose a trainer, book its slot in the Lua script)
until the run is PLACED; the trainer's StartRun RPC is left out (dispatch returns at once), then the run is
cancelled, which frees the slot. Trainers are registry entries with one slot each, all but one busy, so every
pass ranks all of them. Results: bench/results/scaling.{json,md}.

Data-parallel tokens/s (1 vs 2 workers) is not measured here yet: data-parallel runs are not implemented.

Run: `.venv/bin/python -m bench.scaling [--samples 200]`
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from services.common.records import RunRecord, TrainerRecord
from services.common.redis_server import start_redis
from services.common.redis_store import RunStore
from services.gateway.placement import Placer

RESULTS = Path(__file__).resolve().parent / "results"


def placement_latency(store: RunStore, n_trainers: int, samples: int) -> list[float]:
    prefix = store.prefix
    for i in range(n_trainers):
        record = TrainerRecord(id=f"t{i}", address=f"10.0.0.{i + 1}:50052", slots=1, runs_root="/runs")
        store.register_trainer(record, ttl_seconds=600)
    # All trainers but the last hold a run, so every pass looks at every trainer and books the free one.
    for i in range(n_trainers - 1):
        store.create_run(RunRecord(id=f"busy-{prefix.strip(':')}-{i}", spec={}), claim=f"t{i}")
    placer = Placer(store, dispatch=lambda run, trainer: None, auto_resume=False)
    out = []
    for n in range(samples):
        run_id = f"r-{prefix.strip(':')}-{n}"
        start = time.perf_counter()
        store.create_run(RunRecord(id=run_id, spec={}))
        placer.place_now()
        out.append((time.perf_counter() - start) * 1000)
        record = store.get_run(run_id)
        assert record.status == "PLACED" and record.trainer == f"t{n_trainers - 1}", record
        store.transition(run_id, "CANCELLED", release=True, reason="bench")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    results = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "placement": {}}
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp))
        try:
            for n in (2, 8):
                store = RunStore.from_url(redis.url, prefix=f"bench{n}:")
                ms = sorted(placement_latency(store, n, args.samples))
                results["placement"][str(n)] = {
                    "samples": len(ms),
                    "median_ms": statistics.median(ms),
                    "p95_ms": ms[int(0.95 * (len(ms) - 1))],
                }
                store.close()
        finally:
            redis.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Scaling: gateway placement latency",
        "",
        "Submit one run + one placement pass (choose, book the slot) until PLACED; trainer RPC excluded.",
        "",
        "| registered trainers | samples | median ms | p95 ms |",
        "|---|---|---|---|",
    ]
    for n, r in results["placement"].items():
        lines.append(f"| {n} | {r['samples']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} |")
    (RESULTS / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
