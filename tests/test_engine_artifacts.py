"""Run dirs are mlx_lm adapter dirs: the mlx_lm CLI generates with them, and fuse makes a standalone model."""

import subprocess
import sys

import mlx.core as mx
import pytest
from mlx_lm.utils import load as mlx_load

from services.common.spec import RunSpec
from services.trainer.engine import api
from services.trainer.engine.artifacts import base_model_of, fuse


@pytest.fixture(scope="module")
def lora_run(tiny_model, chat_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lora-run")
    spec = RunSpec.from_dict(
        dict(
            model=str(tiny_model),
            data=str(chat_data),
            iters=3,
            batch_size=2,
            max_seq_length=128,
            warmup_steps=0,
            eval_every=0,
            save_every=0,
            test_samples=0,
            learning_rate=1e-2,
        )
    )
    api.train(spec, run_dir)
    return run_dir


def test_mlx_lm_generate_accepts_the_run_dir(tiny_model, lora_run):
    command = [
        sys.executable,
        "-m",
        "mlx_lm",
        "generate",
        "--model",
        str(tiny_model),
        "--adapter-path",
        str(lora_run),
        "--prompt",
        "Ana is 30 and lives in Oslo.",
        "--max-tokens",
        "5",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Generation:" in done.stdout


def test_fuse_matches_model_plus_adapter(lora_run, tmp_path):
    fused_dir = fuse(lora_run, tmp_path / "fused")
    fused, tokenizer = mlx_load(str(fused_dir))
    adapted, _ = mlx_load(base_model_of(lora_run), adapter_path=str(lora_run))
    tokens = mx.array([tokenizer.encode("Bob is 41 and lives in Lima.")])
    assert mx.allclose(fused(tokens), adapted(tokens), atol=1e-4).item()
