"""Data-parallel runs on mx.distributed: two ring ranks on loopback train the tiny model exactly as one process
does with the same global batch (fp32), and rank 0's adapter loads in mlx_lm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlx_lm import generate
from mlx_lm.utils import load as mlx_load

from services.common.spec import RunSpec
from services.trainer.engine import api
from services.trainer.engine.errors import SpecError
from services.trainer.engine.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
FIELDS = dict(
    iters=5,
    batch_size=4,
    max_seq_length=128,
    warmup_steps=1,
    eval_every=0,
    save_every=0,
    val_batches=1,
    test_samples=0,
    learning_rate=2e-3,
    dtype="float32",
)


def curve(run_dir: Path, kind: str = "step") -> list[float]:
    key = "train_loss" if kind == "step" else "valid_loss"
    return [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def test_two_ring_ranks_match_one_process_and_the_adapter_loads(tiny_model, chat_data, tmp_path):
    single = tmp_path / "single"
    api.train(RunSpec.from_dict({"model": str(tiny_model), "data": str(chat_data), **FIELDS}), single)

    dp = tmp_path / "dp"
    sets = [a for k, v in FIELDS.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "services.cli.train", "--model", str(tiny_model), "--data", str(chat_data)]
    cmd += ["--workers", "2", "--output", str(dp), "--no-baseline", *sets]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x2 (ring)" in done.stdout  # the backend line: two ranks over the ring

    one, two = curve(single), curve(dp)
    assert len(one) == len(two) == FIELDS["iters"]
    gap = max(abs(a - b) for a, b in zip(one, two))
    print(f"largest step-loss difference, 1 process vs 2 ring ranks: {gap:.2e}")
    assert gap < 1e-4, (one, two)
    assert abs(curve(single, "eval")[-1] - curve(dp, "eval")[-1]) < 1e-4
    # Rank 0 alone wrote the run: one step record per step, the adapter, the result.
    assert (dp / "adapters.safetensors").exists() and (dp / "result.json").exists()

    model, tokenizer = mlx_load(str(tiny_model), adapter_path=str(dp))
    text = generate(model, tokenizer, "Ana is 30 and lives in Oslo. Give JSON.", max_tokens=4)
    assert isinstance(text, str)


def test_workers_need_their_processes_and_a_batch_that_splits(tiny_model, chat_data, tmp_path):
    with pytest.raises(SpecError, match="multiple of 2"):
        RunSpec.from_dict({"batch_size": 3, "workers": 2})
    with pytest.raises(SpecError, match="auto is not supported"):
        RunSpec.from_dict({"batch_size": "auto", "workers": 2})
    spec = RunSpec.from_dict({"model": str(tiny_model), "data": str(chat_data), **FIELDS, "workers": 2})
    with pytest.raises(SpecError, match="started alone"):
        api.train(spec, tmp_path / "alone")
