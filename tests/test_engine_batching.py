"""batch_size auto (the memory model picks the micro-batch, accumulation keeps the effective batch), a resume
with a different split of the same rows (what the out-of-memory recovery does), and the end of a run: test
loss capped by val_batches, progress events outside the training steps, --no-baseline's missing step-0 eval."""

import pytest
from conftest import write_chat_dataset

from services.common.memory import ModelShape, predict_peak_memory
from services.common.spec import RunSpec
from services.trainer.engine import api
from services.trainer.engine.callbacks import TrainingCallback
from services.trainer.engine.metrics import read_metrics


def spec_for(model, data, **overrides) -> RunSpec:
    values = dict(
        model=str(model),
        data=str(data),
        iters=4,
        batch_size=2,
        max_seq_length=128,
        warmup_steps=1,
        eval_every=0,
        save_every=0,
        val_batches=2,
        test_samples=0,
        max_new_tokens=8,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return RunSpec.from_dict(values)


def test_auto_batch_is_the_largest_divisor_of_the_effective_batch_that_fits(tiny_model, chat_data, tmp_path):
    import json

    config = json.loads((tiny_model / "config.json").read_text())
    shape = ModelShape.from_config(config)
    # A budget between the predicted peaks of micro-batch 4 and 5: auto must pick 4 x 4 for 16 rows per step.
    low = predict_peak_memory(shape, "lora", 4, 128).peak_bytes
    high = predict_peak_memory(shape, "lora", 5, 128).peak_bytes
    budget_gb = (low + high) / 2 / 1e9
    spec = spec_for(
        tiny_model, chat_data, batch_size="auto", effective_batch_size=16, memory_budget_gb=budget_gb, iters=2
    )
    logs = []

    class Logs(TrainingCallback):
        def on_log(self, message):
            logs.append(message)

    result = api.train(spec, tmp_path / "auto", callback=Logs())
    assert (result.batch_size, result.grad_accumulation, result.batch_auto) == (4, 4, True)
    assert result.peak_memory_bytes <= budget_gb * 1e9  # measured, not only predicted
    assert any("batch_size auto: micro-batch 4 x accumulation 4" in m for m in logs)
    saved = json.loads((tmp_path / "auto" / "spec.json").read_text())
    assert (saved["batch_size"], saved["grad_accumulation"]) == (4, 4)
    # The CLI spelling.
    assert RunSpec.from_dict({"batch_size": "auto"}).auto_batch


def test_resume_with_half_the_micro_batch_continues_the_curve(tiny_model, chat_data, tmp_path):
    spec = spec_for(tiny_model, chat_data, iters=6, batch_size=4, save_every=3)
    reference = api.train(spec, tmp_path / "reference")
    ref_losses = [
        r["train_loss"] for r in read_metrics(tmp_path / "reference" / "metrics.jsonl") if r["kind"] == "step"
    ]

    class StopAt3(TrainingCallback):
        step = 0

        def on_step(self, m):
            self.step = m.step

        def should_stop(self):
            return self.step >= 3

    api.train(spec, tmp_path / "split", callback=StopAt3())
    halved = spec.replace(batch_size=2, grad_accumulation=2)
    resumed = api.train(halved, tmp_path / "split", resume=True)
    losses = [
        r["train_loss"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl") if r["kind"] == "step"
    ]
    assert resumed.steps == 6 and (resumed.batch_size, resumed.grad_accumulation) == (2, 2)
    assert losses[:3] == ref_losses[:3]
    # Step 4 sees the same rows with the same weights; later steps differ only by how gradients are averaged.
    assert losses[3] == pytest.approx(ref_losses[3], rel=1e-4)
    assert losses[4:] == pytest.approx(ref_losses[4:], rel=0.03)
    assert reference.steps == 6
    with pytest.raises(Exception, match="batch_size x grad_accumulation"):
        api.train(spec.replace(batch_size=2, iters=8), tmp_path / "split", resume=True)


def test_end_of_run_is_capped_and_reports_progress(tiny_model, tmp_path):
    data = write_chat_dataset(tmp_path / "data", n_train=16, n_valid=8, n_test=40)
    progress = []

    class Watch(TrainingCallback):
        def on_progress(self, phase, done, total, unit):
            progress.append((phase, done, total, unit))

    spec = spec_for(tiny_model, data, iters=2, eval_every=1, val_batches=1, test_samples=3, batch_size=1)
    result = api.train(spec, tmp_path / "run", callback=Watch(), initial_eval=False)
    # One packed row of 128 tokens holds a few samples: far fewer than the 40 of the split.
    assert 1 <= result.test_loss_samples < 40 and result.test_loss_tokens > 0
    assert ("test_loss", 1, 1, "batches") in progress
    assert ("valid", 1, 1, "batches") in progress  # the validation passes report too
    scoring = [p for p in progress if p[0] == "test_scoring"]
    assert scoring[0][1:3] == (0, 3) and scoring[-1][1:3] == (3, 3)
    evals = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert 0 not in evals and evals  # no step-0 validation, the later ones still run
