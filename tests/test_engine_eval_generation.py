"""Generation metrics at eval steps: the same first valid rows answered at every evaluation, the exact match
on the eval event, and each sample's outcome in eval_samples.jsonl."""

from __future__ import annotations

import json
import math

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
