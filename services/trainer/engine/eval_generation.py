"""Generation metrics at every evaluation: the first `eval_samples` rows of the valid split (the same rows
each time) answered greedily and scored with the dataset's scorer. The eval event carries the exact match;
`<run_dir>/eval_samples.jsonl` keeps every sample's answer and outcome, one JSON object per (step, sample)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from services.common.datasets.samples import Split, reference_answer

from .callbacks import TrainingCallback
from .evaluation import generate_answers, scorer, task_name

EVAL_SAMPLES_FILE = "eval_samples.jsonl"


class EvalGeneration(TrainingCallback):
    """Wraps the run's callback: each on_eval first scores the fixed valid slice, then passes the eval on."""

    def __init__(
        self, inner: TrainingCallback, model: Any, tokenizer: Any, valid: Split, spec: Any, run_dir: Path
    ):
        self.inner, self.model, self.tokenizer = inner, model, tokenizer
        self.records = valid.records[: spec.eval_samples]
        self.max_tokens = spec.max_new_tokens
        self.score = scorer(task_name(Path(spec.data_path)))
        self.path = Path(run_dir) / EVAL_SAMPLES_FILE

    def on_eval(self, metrics: Any) -> None:
        exact = math.nan
        if self.records and valid_format(self.records):
            texts, _ = generate_answers(self.model, self.tokenizer, self.records, self.max_tokens)
            references = [reference_answer(r) for r in self.records]
            per_sample = [self.score([t], [r])["exact_match"] for t, r in zip(texts, references)]
            exact = sum(per_sample) / len(per_sample)
            with open(self.path, "a") as fh:
                for index, (text, ref, hit) in enumerate(zip(texts, references, per_sample)):
                    row = {"step": metrics.step, "sample": index, "correct": bool(hit), "answer": text}
                    fh.write(json.dumps(row | {"reference": ref}) + "\n")
        self.inner.on_eval(dataclasses.replace(metrics, exact_match=exact))

    def on_start(self, info: dict) -> None:
        self.inner.on_start(info)

    def on_step(self, metrics: Any) -> None:
        self.inner.on_step(metrics)

    def on_checkpoint(self, step: int, path: str) -> None:
        self.inner.on_checkpoint(step, path)

    def on_log(self, message: str) -> None:
        self.inner.on_log(message)

    def on_end(self, result: Any) -> None:
        self.inner.on_end(result)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def superseded(self) -> bool:
        return self.inner.superseded()


def truncate_eval_samples(path: Path, step: int) -> None:
    """Drop the rows of evaluations after the checkpoint a run resumes from: they are produced again (as
    metrics.jsonl's records are), and a reader would otherwise see those steps twice."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def valid_format(records: list[dict]) -> bool:
    return "messages" in records[0] or "prompt" in records[0]
