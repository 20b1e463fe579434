"""The default dataset: short notes about people who join a company → JSON records, in mlx_lm's chat format.

This module is the task's public face: deterministic train/valid/test splits, writing them to disk, and
the scorer (from `extraction_score`). `python -m services.trainer.engine.tasks.extraction --out DIR` writes
the dataset the Makefile builds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.datasets.extraction_schema import (
    FIELDS,
    SCHEMA,
    SYSTEM_PROMPT,
    TASK_NAME,
    TASK_VERSION,
    canonical_json,
)
from services.common.datasets.extraction_score import (
    SCORER_NAME,
    ExtractionScore,
    parse_prediction,
    score,
)
from services.common.files import write_atomic
from services.trainer.engine.tasks.extraction_generate import (
    FEATURES,
    ExtractionSample,
    estimated_tokens,
    generate_sample,
)

__all__ = [
    "FIELDS",
    "SPLITS",
    "SYSTEM_PROMPT",
    "ExtractionSample",
    "ExtractionScore",
    "build_splits",
    "canonical_json",
    "describe",
    "generate_splits",
    "parse_prediction",
    "score",
    "write_dataset",
]

SPLITS = ("train", "valid", "test")


def build_splits(
    seed: int = 0, n_train: int = 1000, n_valid: int = 100, n_test: int = 200
) -> dict[str, list[ExtractionSample]]:
    """Samples per split, with their difficulty features; `generate_splits` is the same as chat dicts.

    Each split draws from its own stream, and test is drawn first, then valid, then train, each skipping
    inputs already taken: so the test set of a seed does not move when n_train changes, and no input
    appears twice anywhere.
    """
    seen: set[str] = set()
    drawn: dict[str, list[ExtractionSample]] = {}
    for split, n in (("test", n_test), ("valid", n_valid), ("train", n_train)):
        # A str seed goes through SHA-512 in `random`, so it is stable across processes and Python versions.
        rng = random.Random(f"{TASK_NAME}/v{TASK_VERSION}/{seed}/{split}")
        samples: list[ExtractionSample] = []
        while len(samples) < n:
            sample = generate_sample(rng)
            if sample.text not in seen:
                seen.add(sample.text)
                samples.append(sample)
        drawn[split] = samples
    return {split: drawn[split] for split in SPLITS}


def generate_splits(
    seed: int = 0, n_train: int = 1000, n_valid: int = 100, n_test: int = 200
) -> dict[str, list[dict]]:
    """{"train"|"valid"|"test": [{"messages": [system, user, assistant]}, ...]}, deterministic for a seed."""
    splits = build_splits(seed, n_train, n_valid, n_test)
    return {split: [sample.to_chat() for sample in samples] for split, samples in splits.items()}


def write_dataset(
    out_dir: Path, seed: int = 0, n_train: int = 1000, n_valid: int = 100, n_test: int = 200
) -> dict[str, Path]:
    """Write train/valid/test.jsonl and dataset.json into `out_dir`; return the split files by split name.

    Every file is written under a temporary name and renamed into place, and train.jsonl goes last: the
    Makefile takes its presence to mean the dataset is complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = build_splits(seed, n_train, n_valid, n_test)
    paths = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    for split in ("test", "valid"):
        write_atomic(paths[split], _jsonl(splits[split]))
    metadata = _metadata(seed, splits)
    write_atomic(out_dir / "dataset.json", json.dumps(metadata, indent=2) + "\n")
    write_atomic(paths["train"], _jsonl(splits["train"]))
    return paths


def describe(samples: Iterable[ExtractionSample]) -> dict[str, Any]:
    """Size and difficulty of a split: lengths of whole chat samples and the share of each feature."""
    samples = list(samples)
    chars = [sum(len(m["content"]) for m in s.to_chat()["messages"]) for s in samples]
    tokens = [estimated_tokens(s) for s in samples]
    n = len(samples) or 1
    return {
        "count": len(samples),
        "max_chars": max(chars, default=0),
        "mean_chars": round(statistics.fmean(chars), 1) if chars else 0.0,
        "max_estimated_tokens": max(tokens, default=0),
        "mean_estimated_tokens": round(statistics.fmean(tokens), 1) if tokens else 0.0,
        "records": {k: sum(len(s.records) == k for s in samples) for k in (1, 2, 3)},
        "features": {f: round(sum(f in s.features for s in samples) / n, 3) for f in FEATURES},
    }


def _metadata(seed: int, splits: dict[str, list[ExtractionSample]]) -> dict[str, Any]:
    return {
        "name": TASK_NAME,
        "task": TASK_NAME,  # what evaluation looks up to pick the scorer
        "version": TASK_VERSION,
        "seed": seed,
        "format": "chat",
        "description": "Notes about people who join a company -> JSON records (name, age, city, start date).",
        "counts": {split: len(samples) for split, samples in splits.items()},
        "fields": list(FIELDS),
        "schema": SCHEMA,
        "system_prompt": SYSTEM_PROMPT,
        "scorer": {
            "name": SCORER_NAME,
            "function": "services.trainer.engine.tasks.extraction:score",
            "metrics": ["exact_match", "field_accuracy", "record_count_accuracy", "parse_rate"],
        },
        "splits": {split: describe(samples) for split, samples in splits.items()},
        "all_splits": describe(sample for samples in splits.values() for sample in samples),
    }


def _jsonl(samples: list[ExtractionSample]) -> str:
    return "".join(json.dumps(sample.to_chat()) + "\n" for sample in samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the extraction dataset (train/valid/test JSONL).")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=1000, help="training samples")
    parser.add_argument("--valid", type=int, default=100, help="validation samples")
    parser.add_argument("--test", type=int, default=200, help="test samples")
    args = parser.parse_args(argv)
    write_dataset(args.out, seed=args.seed, n_train=args.train, n_valid=args.valid, n_test=args.test)
    metadata = json.loads((args.out / "dataset.json").read_text())
    counts = " ".join(f"{split}={n}" for split, n in metadata["counts"].items())
    every = metadata["all_splits"]
    print(
        f"{TASK_NAME} v{TASK_VERSION} seed={args.seed}: {counts} -> {args.out} "
        f"(sample chars max={every['max_chars']} mean={every['mean_chars']:.0f}, "
        f"estimated tokens max={every['max_estimated_tokens']} mean={every['mean_estimated_tokens']:.0f})"
    )


if __name__ == "__main__":
    main()
