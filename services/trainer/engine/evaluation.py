"""Test-split measurements at the end of a run: the loss over (a capped number of) batches, and task metrics
from greedy batched generations scored with the dataset's scorer. Both report progress as they go, so a
watcher sees the run working, not a silence of minutes.

Each scored sample's answer, reference and outcome can be kept as `test_samples.jsonl` (one JSON object per
sample, in split order), and TaskScore.sample_exact carries the outcomes, so a comparison can pair two
runs' answers sample by sample (McNemar's test) without reading the trainer's files.

A dataset dir may hold `dataset.json` naming its task; the default dataset's task is "extraction" (JSON
exact match plus per-field accuracy). Other chat/completion data gets whitespace-normalized exact match.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import BatchGenerator

from services.common.datasets.samples import BatchPlan, Split, prompt_messages, reference_answer
from services.common.datasets.scoring import scorer, task_name  # noqa: F401 - the engine's names for them

from .metrics import TaskScore

Progress = Callable[[int, int], None]  # (done, total)

# Rows decoded together. Decoding a small model is bound by reading its weights, so more rows should cost
# little per row (not yet measured here); 64 answers of 160 tokens keep ~0.7 GB of KV cache for SmolLM2-135M.
GENERATION_BATCH = 64
PREFILL_BATCH = 16


@dataclass(frozen=True)
class LossOver:
    loss: float  # token-weighted mean
    tokens: int  # loss-carrying tokens
    samples: int  # samples whose tokens were in the batches


def loss_over(
    model: nn.Module,
    plan: BatchPlan,
    max_batches: int,
    progress: Progress | None = None,
    loss: Callable | None = None,
) -> LossOver:
    """Token-weighted mean `loss` (default: the engine's cross-entropy) over the first max_batches (-1 = all)
    batches of a split, in order."""
    from .methods import loss_fn
    from .training import to_device

    loss = loss or loss_fn
    was_training = model.training
    model.eval()
    total_batches = plan.batches_per_epoch(shuffle=False)
    if max_batches > 0:
        total_batches = min(total_batches, max_batches)
    total, ntoks, samples = mx.array(0.0), mx.array(0.0), 0
    for done, batch in enumerate(plan.epoch_batches(shuffle=False, limit=total_batches), start=1):
        value, n = loss(model, *to_device(batch))
        total, ntoks = total + value * n, ntoks + n
        mx.eval(total, ntoks)
        samples += (
            sum(len(set(row[row > 0].tolist())) for row in batch.segments)
            if batch.segments is not None
            else len(batch.inputs)
        )
        if progress:
            progress(done, total_batches)
    if was_training:
        model.train()
    n = int(ntoks.item())
    return LossOver(total.item() / n if n else float("nan"), n, samples)


def generate_answers(
    model: nn.Module,
    tokenizer: Any,
    records: list[dict],
    max_tokens: int,
    progress: Progress | None = None,
) -> tuple[list[str], float]:
    """Greedy answers for each record's prompt; returns (texts, generated tokens per second).

    All prompts go into one continuously batched generator (mlx_lm's BatchGenerator, as batch_generate uses):
    a finished answer frees its row for the next prompt, so a chunk's longest answer does not hold the rest
    up, and each finished answer is reported as progress."""
    was_training = model.training
    model.eval()
    prompts = [
        list(tokenizer.apply_chat_template(prompt_messages(r), add_generation_prompt=True, return_dict=False))
        for r in records
    ]
    generator = BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=GENERATION_BATCH,
        prefill_batch_size=PREFILL_BATCH,
    )
    tic = time.perf_counter()
    uids = generator.insert(prompts, [max_tokens] * len(prompts))
    answers: dict[int, list[int]] = {uid: [] for uid in uids}
    finished = 0
    try:
        with generator.stats() as stats:
            while responses := generator.next_generated():
                for r in responses:
                    if r.finish_reason != "stop":
                        answers[r.uid].append(r.token)
                    if r.finish_reason is not None:
                        finished += 1
                        if progress:
                            progress(finished, len(prompts))
    finally:
        generator.close()
    seconds = time.perf_counter() - tic
    if was_training:
        model.train()
    texts = [tokenizer.decode(answers[uid]) for uid in uids]
    return texts, (stats.generation_tokens / seconds if seconds else 0.0)


TEST_SAMPLES_FILE = "test_samples.jsonl"


def prompt_id(record: dict[str, Any]) -> str:
    """The row's own id when it has one, else a short hash of the prompt it is asked: stable across runs of
    the same data, so two runs' files can be joined on it as well as on the index."""
    if isinstance(record.get("id"), str | int):
        return str(record["id"])
    text = json.dumps(prompt_messages(record), sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def per_sample(
    score: Callable[[list[str], list[str]], dict[str, Any]], texts: list[str], references: list[str]
) -> list[dict[str, Any]]:
    """Each answer scored alone: exact (bool) and score (the mean field accuracy where the task has fields,
    else the exact match as 0/1)."""
    out = []
    for text, reference in zip(texts, references):
        result = score([text], [reference])
        fields = result.get("field_accuracy") or {}
        exact = bool(result["exact_match"] >= 1.0)
        out.append({"exact": exact, "score": sum(fields.values()) / len(fields) if fields else float(exact)})
    return out


def write_samples(
    path: Path, records: list[dict], texts: list[str], references: list[str], outcomes: list[dict]
) -> None:
    """test_samples.jsonl, written whole then renamed: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        for index, (record, text, reference, outcome) in enumerate(zip(records, texts, references, outcomes)):
            row = {"index": index, "prompt_id": prompt_id(record), "answer": text, "reference": reference}
            fh.write(json.dumps(row | outcome, ensure_ascii=False) + "\n")
    tmp.replace(path)


def score_split(
    model: nn.Module,
    tokenizer: Any,
    split: Split,
    data_dir: Path,
    samples: int,
    max_tokens: int,
    progress: Progress | None = None,
    samples_path: Path | None = None,
) -> TaskScore | None:
    """Greedy answers to the split's first `samples` rows, scored; with samples_path, each sample's answer
    and outcome is written there (test_samples.jsonl)."""
    if split.format == "text" or samples <= 0:
        return None
    records = split.records[:samples]
    task = task_name(data_dir)
    if progress:
        progress(0, len(records))
    texts, tps = generate_answers(model, tokenizer, records, max_tokens, progress)
    references = [reference_answer(r) for r in records]
    score = scorer(task)
    result = score(texts, references)
    outcomes = per_sample(score, texts, references)
    if samples_path is not None:
        write_samples(samples_path, records, texts, references, outcomes)
    return TaskScore(
        task=task,
        n=len(records),
        exact_match=result["exact_match"],
        field_accuracy=result["field_accuracy"],
        parse_rate=result["parse_rate"],
        generation_tokens_per_second=tps,
        sample_exact=[o["exact"] for o in outcomes],
    )
