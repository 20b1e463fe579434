"""Where training rows come from: files in a dataset dir (JSONL read line by line; parquet, arrow, json and
csv through Hugging Face `datasets`), a `datasets.save_to_disk` dir, or a hub name (`hf:owner/name`, where
the machine reaches the hub). Every row comes back numbered, so a bad one is named by file and row.

Split files are found by name: `train.*`, `valid.*` (or `validation.*`, `val.*`, `dev.*`), `test.*`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.errors import DatasetError

HUB_PREFIX = "hf:"
# file suffix -> the `datasets` builder that reads it
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".csv": "csv"}
SUFFIXES = (".jsonl", *BUILDERS)
SPLIT_ALIASES = {
    "train": ("train",),
    "valid": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}

Rows = list[tuple[int, dict[str, Any]]]  # (1-based line or row, record)


def is_hub_name(data: str) -> bool:
    return str(data).startswith(HUB_PREFIX)


def parse_line(text: str, path: Path | str, number: int) -> dict[str, Any]:
    """One JSONL line as a JSON object, or a DatasetError naming the file and line."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", number) from None
    except RecursionError:  # e.g. 100,000 nested brackets: Python's parser recurses once per level
        raise DatasetError(path, "invalid JSON (nested too deeply to parse)", number) from None
    if not isinstance(record, dict):
        raise DatasetError(path, f"expected a JSON object, got {type(record).__name__}", number)
    return record


def read_jsonl(path: Path) -> Rows:
    if not path.exists():
        raise DatasetError(path, "file not found")
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            records.append((number, parse_line(line, path, number)))
    if not records:
        raise DatasetError(path, "file is empty")
    return records


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "<datasets>", "reading parquet/arrow/json/csv or hub datasets needs: pip install 'peftlab[hf]'"
        ) from None
    datasets.disable_progress_bars()
    return datasets


def _numbered(table: Any, first: int) -> Rows:
    """Rows of a `datasets.Dataset`, numbered from `first` (1 for row files, 2 for CSV: its header is line 1)."""
    return [(first + i, _drop_nulls(row)) for i, row in enumerate(table.to_list())]


def _drop_nulls(value: Any) -> Any:
    """Arrow gives every row every column of the file (None where a row had none, e.g. a chat message without
    `tool_calls`); drop those, so a row reads as it was written."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def read_table(path: Path) -> Rows:
    builder = BUILDERS[path.suffix]
    datasets = _datasets()
    try:
        # CSV cells are text: "2" is the answer "2", not the number 2, and an empty cell is "", not NaN.
        options = _csv_as_text(path, datasets) if builder == "csv" else {}
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # the readers raise many types (ArrowInvalid, DatasetGenerationError, ...)
        cause = exc.__cause__ or exc
        raise DatasetError(path, f"cannot read as {builder}: {str(cause).splitlines()[0][:300]}") from None
    if len(table) == 0:
        raise DatasetError(path, "file is empty")
    return _numbered(table, 2 if builder == "csv" else 1)


def _csv_as_text(path: Path, datasets: Any) -> dict[str, Any]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    if not header:
        raise DatasetError(path, "file is empty")
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"features": features, "keep_default_na": False}


def read_rows(path: Path) -> Rows:
    return read_jsonl(path) if path.suffix == ".jsonl" else read_table(path)


def split_files(data_dir: Path) -> dict[str, Path]:
    """The dir's split files by split name; two files for one split (train.jsonl and train.csv) is an error."""
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        matches = [
            data_dir / f"{a}{s}" for a in aliases for s in SUFFIXES if (data_dir / f"{a}{s}").is_file()
        ]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise DatasetError(data_dir, f"several files for the {split} split ({names}); keep one")
        if matches:
            found[split] = matches[0]
    return found


def _from_dataset_dict(splits: Any, where: str) -> dict[str, tuple[str, Rows]]:
    out = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in splits:
                out[split] = (f"{where}[{alias}]", _numbered(splits[alias], 1))
                break
    return out


def read_saved(data_dir: Path) -> dict[str, tuple[str, Rows]]:
    """A dir written by `DatasetDict.save_to_disk`."""
    return _from_dataset_dict(_datasets().load_from_disk(str(data_dir)), str(data_dir))


def read_hub(name: str) -> dict[str, tuple[str, Rows]]:
    """A hub dataset's splits (train, validation/valid, test), downloaded through the `datasets` cache."""
    repo = name.removeprefix(HUB_PREFIX)
    datasets = _datasets()
    try:
        splits = datasets.load_dataset(repo)
    except Exception as exc:  # offline, unknown name, gated repo: say which, in one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise DatasetError(name, f"cannot load from the Hugging Face hub: {first}") from None
    return _from_dataset_dict(splits, name)


def is_saved_dataset(data_dir: Path) -> bool:
    return (data_dir / "dataset_dict.json").is_file()


def has_train_split(data_dir: Path) -> bool:
    return is_saved_dataset(data_dir) or "train" in split_files(data_dir)
