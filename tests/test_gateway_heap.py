"""The gateway keeps the garbage collector off what it loads once (services/common/heap.py): after its
tokenizer imports and a model's tokenizer load, a full collection walks only what requests made since, not
the ~300,000 objects of transformers and torch (bench/load.py: those full collections took 100-330 ms each
and were the whole of GetRun's p99). Measured in a fresh interpreter, by what a full collection would walk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import gc, json, sys
from services.gateway import catalog
catalog.warm_tokenizer_imports()
catalog._engine_tokenizer(sys.argv[1], ())
walked = len(gc.get_objects())  # every generation but the permanent one: what gc.collect() walks
print(json.dumps({"walked": walked, "frozen": gc.get_freeze_count(), "modules": len(sys.modules)}))
"""


def test_a_full_collection_walks_none_of_the_tokenizer_imports(tiny_model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    heap = json.loads(out.strip().splitlines()[-1])
    assert heap["modules"] > 1000, heap  # transformers (and torch, where installed) did load
    assert heap["frozen"] > 150_000, heap
    assert heap["walked"] < heap["frozen"] / 10, heap
