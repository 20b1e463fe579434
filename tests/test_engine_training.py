"""Training on the tiny model: every method, reproducibility, the loop's options, exact resume, artifacts."""

import json
import os
import signal
import subprocess
import sys
import time

import mlx.core as mx
import pytest

from services.common.spec import RunSpec
from services.trainer.engine import api
from services.trainer.engine.callbacks import TrainingCallback
from services.trainer.engine.errors import CheckpointError, ModelError, RunSuperseded, SpecError
from services.trainer.engine.metrics import read_metrics


def tiny_spec(model, data, **overrides) -> RunSpec:
    values = dict(
        model=str(model),
        data=str(data),
        iters=6,
        batch_size=2,
        max_seq_length=128,
        warmup_steps=1,
        eval_every=3,
        save_every=3,
        val_batches=2,
        test_samples=2,
        max_new_tokens=8,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return RunSpec.from_dict(values)


def step_losses(run_dir):
    return [r["train_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "step"]


@pytest.mark.parametrize(
    "method, extra",
    [
        ("lora", {}),
        ("dora", {}),
        ("qlora", {"quant_bits": 4}),
        ("qlora", {"quant_bits": 8}),
        ("full", {"learning_rate": 1e-4}),
    ],
)
def test_each_method_trains_and_saves_mlx_lm_artifacts(tiny_model, chat_data, tmp_path, method, extra):
    spec = tiny_spec(tiny_model, chat_data, method=method, **extra)
    result = api.train(spec, tmp_path / "run")
    assert result.status == "succeeded" and result.steps == 6
    losses = step_losses(tmp_path / "run")
    assert len(losses) == 6 and all(map(lambda x: x == x, losses))
    assert result.final_valid_loss < 11.0  # random init starts at ln(49152) = 10.8; it must not blow up
    assert (tmp_path / "run" / "adapters.safetensors").stat().st_size == result.adapter_bytes
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == {"qlora": "lora"}.get(method, method)
    assert os.path.isdir(config["model"])
    if method == "full":
        assert result.trainable_parameters == result.total_parameters
    else:
        assert 0 < result.trainable_parameters < result.total_parameters / 10
    assert result.peak_memory_bytes > 0 and result.peak_rss_bytes > 0
    assert result.task is not None and result.task.n == 2


def test_lora_loss_drops(tiny_model, chat_data, tmp_path):
    spec = tiny_spec(
        tiny_model,
        chat_data,
        iters=24,
        eval_every=0,
        save_every=0,
        test_samples=0,
        learning_rate=3e-3,
        rank=16,
    )
    api.train(spec, tmp_path / "run")
    losses = step_losses(tmp_path / "run")
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5


def test_same_spec_and_seed_give_the_same_curve(tiny_model, chat_data, tmp_path):
    spec = tiny_spec(tiny_model, chat_data, dropout=0.1, test_samples=0)
    api.train(spec, tmp_path / "a")
    api.train(spec, tmp_path / "b")
    api.train(spec.replace(seed=1), tmp_path / "c")
    a, b, c = (step_losses(tmp_path / x) for x in "abc")
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5
    assert a != c


@pytest.mark.parametrize("option", [{"compile": False}, {"grad_checkpoint": True}])
def test_compile_and_checkpointing_do_not_change_the_math(tiny_model, chat_data, tmp_path, option):
    base = tiny_spec(tiny_model, chat_data, iters=3, eval_every=0, save_every=0, test_samples=0)
    api.train(base, tmp_path / "base")
    api.train(base.replace(**option), tmp_path / "other")
    for x, y in zip(step_losses(tmp_path / "base"), step_losses(tmp_path / "other")):
        assert x == pytest.approx(y, abs=1e-4)


def test_grad_accumulation_and_schedules(tiny_model, chat_data, tmp_path):
    spec = tiny_spec(
        tiny_model, chat_data, grad_accumulation=2, schedule="linear", warmup_steps=2, test_samples=0
    )
    api.train(spec, tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "step"]
    lrs = [r["learning_rate"] for r in records]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1e-3)  # warmup, then the peak, then linear decay
    assert lrs[2] > lrs[3] > lrs[5] >= 1e-4 - 1e-9
    assert records[0]["tokens"] > 0


def test_early_stopping(tiny_model, chat_data, tmp_path):
    # A ~0 learning rate cannot improve the valid loss by 0.1: the eval at step 2 is the first without
    # improvement over the one at step 0, and patience 1 stops there.
    spec = tiny_spec(
        tiny_model,
        chat_data,
        iters=20,
        eval_every=2,
        early_stopping_patience=1,
        schedule="constant",
        learning_rate=1e-9,
        warmup_steps=0,
        test_samples=0,
        early_stopping_min_delta=0.1,
    )
    result = api.train(spec, tmp_path / "run")
    assert result.status == "early_stopped" and result.steps == 2


def test_cancel_leaves_a_checkpoint_that_resumes(tiny_model, chat_data, tmp_path):
    class StopAfter(TrainingCallback):
        def __init__(self):
            self.steps = 0

        def on_step(self, m):
            self.steps = m.step

        def should_stop(self):
            return self.steps >= 2

    spec = tiny_spec(tiny_model, chat_data, save_every=0, test_samples=0)
    result = api.train(spec, tmp_path / "run", callback=StopAfter())
    assert result.status == "cancelled" and result.steps == 2
    assert (tmp_path / "run" / "checkpoints" / "step_0000002").is_dir()
    resumed = api.train(spec, tmp_path / "run", resume=True)
    assert resumed.status == "succeeded" and resumed.steps == 6


def test_a_superseded_run_stops_and_writes_no_checkpoint_or_adapter(tiny_model, chat_data, tmp_path):
    """Another attempt took the run over (it was taken for lost and resumed into this run dir): unlike a
    cancel, this process must not write a checkpoint, the adapter or a result there."""

    class TakenOverAt3(TrainingCallback):
        def __init__(self):
            self.steps = 0

        def on_step(self, m):
            self.steps = m.step

        def superseded(self):
            return self.steps >= 3

    spec = tiny_spec(tiny_model, chat_data, save_every=1, eval_every=0, test_samples=0)
    run = tmp_path / "run"
    with pytest.raises(RunSuperseded, match="step 3"):
        api.train(spec, run, callback=TakenOverAt3())
    saved = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert saved == ["step_0000001", "step_0000002"]  # none at the step it was superseded, none after
    assert not (run / "adapters.safetensors").exists() and not (run / "result.json").exists()


def test_resume_refuses_mismatched_specs_and_empty_dirs(tiny_model, chat_data, tmp_path):
    spec = tiny_spec(tiny_model, chat_data, iters=3, test_samples=0)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        api.train(spec, tmp_path / "none", resume=True)
    api.train(spec, tmp_path / "run")
    with pytest.raises(CheckpointError, match="already holds a run"):
        api.train(spec, tmp_path / "run")
    with pytest.raises(CheckpointError, match="rank"):
        api.train(spec.replace(rank=4, iters=6), tmp_path / "run", resume=True)


def test_bad_model_and_modules_are_reported(tiny_model, chat_data, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        api.train(tiny_spec(tmp_path / "nope", chat_data), tmp_path / "r1")
    with pytest.raises(SpecError, match="target_modules"):
        api.train(tiny_spec(tiny_model, chat_data, target_modules=["attn.qkv"]), tmp_path / "r2")


KILL_SCRIPT = """
import json
import sys
from pathlib import Path
from services.trainer.engine import api
from services.common.spec import RunSpec
spec = RunSpec.from_dict(json.load(open(sys.argv[1])))
api.train(spec, Path(sys.argv[2]))
"""


def test_sigkill_mid_run_then_resume_continues_the_same_curve(tiny_model, chat_data, tmp_path):
    spec = tiny_spec(tiny_model, chat_data, iters=10, save_every=3, eval_every=5, dropout=0.1, test_samples=0)
    reference = api.train(spec, tmp_path / "reference")

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.to_json())
    run_dir = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(spec_file), str(run_dir)], env=os.environ.copy()
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = (
            [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "step"]
            if run_dir.exists()
            else []
        )
        if len(steps) >= 7:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    resumed = api.train(spec, run_dir, resume=True)

    assert step_losses(run_dir) == step_losses(tmp_path / "reference")
    assert resumed.final_valid_loss == pytest.approx(reference.final_valid_loss, abs=1e-6)
    a = mx.load(str(tmp_path / "reference" / "adapters.safetensors"))
    b = mx.load(str(run_dir / "adapters.safetensors"))
    assert max(mx.abs(a[k] - b[k]).max().item() for k in a) <= 1e-6
