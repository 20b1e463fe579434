"""Generation metrics at eval steps: the same first valid rows answered at every evaluation, the exact match
on the eval event, and each sample's outcome in eval_samples.jsonl."""

from __future__ import annotations

import json
import math
import shutil

from services.common.datasets.samples import reference_answer
from services.common.datasets.sources import read_jsonl
from services.common.spec import RunSpec
from services.trainer.engine.api import train
from services.trainer.engine.callbacks import TrainingCallback


class Evals(TrainingCallback):
    def __init__(self):
        self.evals = []

    def on_eval(self, metrics):
        self.evals.append(metrics)


def test_every_eval_scores_the_same_valid_slice(tiny_model, chat_data, tmp_path):
    spec = RunSpec.from_dict(
        {"model": str(tiny_model), "data": str(chat_data), "iters": 4, "warmup_steps": 0, "eval_every": 2}
        | {"batch_size": 2, "max_seq_length": 64, "test_samples": 0, "val_batches": 1, "save_every": 0}
        | {"eval_samples": 3, "max_new_tokens": 24}
    )
    seen = Evals()
    train(spec, tmp_path / "run", callback=seen)
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval_samples.jsonl").read_text().splitlines()]
    steps = [m.step for m in seen.evals]
    assert steps and sorted({r["step"] for r in rows}) == sorted(set(steps))
    references = [reference_answer(r) for _, r in read_jsonl(chat_data / "valid.jsonl")[:3]]
    for metrics in seen.evals:
        mine = [r for r in rows if r["step"] == metrics.step][-3:]
        assert [r["sample"] for r in mine] == [0, 1, 2]
        assert [r["reference"] for r in mine] == references
        assert not math.isnan(metrics.exact_match)
        assert metrics.exact_match == sum(r["correct"] for r in mine) / 3
        assert all(
            r["correct"] == (" ".join(r["answer"].split()) == " ".join(r["reference"].split())) for r in mine
        )


def test_test_samples_are_kept_and_a_resume_does_not_repeat_eval_rows(tiny_model, chat_data, tmp_path):
    """test_samples.jsonl holds each test sample's answer and outcome (what TaskScore.sample_exact carries);
    a run resumed from an earlier checkpoint evaluates the later steps again, and eval_samples.jsonl keeps
    each (step, sample) once, as metrics.jsonl does."""
    spec = RunSpec.from_dict(
        {"model": str(tiny_model), "data": str(chat_data), "iters": 4, "warmup_steps": 0, "eval_every": 2}
        | {"batch_size": 2, "max_seq_length": 64, "test_samples": 3, "val_batches": 1, "save_every": 2}
        | {"eval_samples": 2, "max_new_tokens": 16}
    )
    run_dir = tmp_path / "run"
    result = train(spec, run_dir)
    samples = [json.loads(line) for line in (run_dir / "test_samples.jsonl").read_text().splitlines()]
    test_rows = [r for _, r in read_jsonl(chat_data / "test.jsonl")[:3]]
    assert [s["index"] for s in samples] == [0, 1, 2]
    assert [s["reference"] for s in samples] == [reference_answer(r) for r in test_rows]
    assert len({s["prompt_id"] for s in samples}) == 3 and all(
        s["prompt_id"].startswith("sha256:") for s in samples
    )
    assert result.task.sample_exact == [s["exact"] for s in samples]
    assert result.task.exact_match == sum(s["exact"] for s in samples) / 3
    assert all(s["score"] == float(s["exact"]) or 0 <= s["score"] < 1 for s in samples)

    # As if the run had died after its step-2 checkpoint had been written but logged step 4 already.
    checkpoints = run_dir / "checkpoints"
    shutil.rmtree(checkpoints / "step_0000004")
    (checkpoints / "latest").write_text("step_0000002")
    eval_rows = (run_dir / "eval_samples.jsonl").read_text().splitlines()
    assert any(json.loads(line)["step"] == 4 for line in eval_rows)
    train(spec, run_dir, resume=True)
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)), keys
    assert {step for step, _ in keys} == {0, 2, 4}
