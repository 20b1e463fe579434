"""Request checks shared by the gateway and the trainer (each checks every request; nothing is written to
Redis before they pass). Every error names the field and the rule it broke.

File paths are confined to configured roots: a relative path is taken inside its root, an absolute one
must lie inside it, and anything that normalizes to a path outside (`../../etc/passwd`) is INVALID_ARGUMENT.
A spec's own rules are RunSpec's (`parse_spec`, where a message or record becomes a RunSpec); `check_spec`
confines its paths to this machine's roots.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument, NotFound, SpecError, clip
from services.common.spec import RunSpec

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# \Z, not $: "$" also matches before a trailing newline ("run\n" would pass).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_NAME = 200
MAX_PATH = 1024  # characters of a path a request names (Linux: PATH_MAX 4096, a name at most 255 bytes)
MAX_PATH_PART = 255
MAX_LABELS = 32
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_DATASET = "default"


@dataclass(frozen=True)
class Roots:
    """Where request paths may point: models, datasets and run dirs."""

    models: Path
    data: Path
    runs: Path

    @classmethod
    def from_paths(cls, models: Path, data: Path, runs: Path) -> Roots:
        return cls(*(Path(os.path.abspath(os.path.expanduser(p))) for p in (models, data, runs)))


def new_id(prefix: str) -> str:
    """Sortable, readable ids: r-20250101-120000-ab12cd."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def check_id(value: str, field: str) -> str:
    if not _ID.match(value or ""):
        raise InvalidArgument(
            f"must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit; got {clip(repr(value), 80)}",
            field,
        )
    return value


def check_name(value: str, field: str = "name") -> str:
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"must be at most {MAX_NAME} characters, got {len(value)}", field)
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument("must not contain control characters", field)
    return value


def check_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels, got {len(labels)}", field)
    for key, value in labels.items():
        if not 1 <= len(key) <= 64:
            raise InvalidArgument(f"keys must be 1-64 characters, got {key!r}", field)
        if len(value) > 256:
            raise InvalidArgument(f"value of {key!r} must be at most 256 characters", field)
    return dict(labels)


def check_range(value: float, low: float, high: float, field: str) -> float:
    if not low <= value <= high:
        raise InvalidArgument(f"must be between {low} and {high}, got {value}", field)
    return value


def check_generation(prompt: str, max_tokens: int, temperature: float) -> int:
    """Generate's inputs; returns max_tokens with its default (128) applied."""
    if not 1 <= len(prompt) <= 32768:
        raise InvalidArgument(f"must be 1..32768 characters, got {len(prompt)}", "prompt")
    max_tokens = max_tokens or 128
    check_range(max_tokens, 1, 4096, "max_tokens")
    check_range(temperature, 0.0, 2.0, "temperature")
    return max_tokens


SPLITS = ("train", "valid", "test")


def check_evaluation(split: str, max_batches: int, task_samples: int) -> str:
    """Evaluate's inputs; returns the split with its default ("test") applied."""
    split = split or "test"
    if split not in SPLITS:
        raise InvalidArgument(f"must be one of {', '.join(SPLITS)}, got {split!r}", "split")
    if max_batches < -1:
        raise InvalidArgument(
            f"must be -1 or 0 (the whole split) or positive, got {max_batches}", "max_batches"
        )
    check_range(task_samples, 0, 10000, "task_samples")
    return split


def page_size(value: int, default: int = 50, maximum: int = 500) -> int:
    if value == 0:
        return default
    return int(check_range(value, 1, maximum, "page_size"))


def confine(value: str, root: Path, field: str) -> Path:
    """`value` as a path inside `root` (relative paths are taken from the root)."""
    if "\x00" in value:
        raise InvalidArgument("must not contain NUL bytes", field)
    if len(value) > MAX_PATH or any(len(part) > MAX_PATH_PART for part in value.split("/")):
        raise InvalidArgument(
            f"a path of at most {MAX_PATH} characters ({MAX_PATH_PART} per name) is expected; "
            f"got {len(value)}: {clip(repr(value), 80)}",
            field,
        )
    full = Path(os.path.normpath(os.path.join(root, os.path.expanduser(value))))
    # Symlinks are resolved before the check (a link inside a root must not lead out of it); links that stay
    # inside the (resolved) root still work.
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(full))
    inside = [p for p in ((full, root), (real, real_root)) if p[0] == p[1] or p[1] in p[0].parents]
    if len(inside) < 2:
        raise InvalidArgument(f"{clip(repr(value), 200)} is outside the allowed root {root}", field)
    return full


def model_dir(value: str, roots: Roots, field: str = "spec.model", must_exist: bool = True) -> Path:
    path = confine(value or DEFAULT_MODEL, roots.models, field)
    if must_exist and not (path / "config.json").is_file():
        what = "no model dir" if not path.exists() else "not an mlx_lm model dir (no config.json)"
        raise NotFound(f"{what} {value or DEFAULT_MODEL!r} under {roots.models}", field)
    return path


# What the engine reads as a split (services/common/datasets/sources.py), and a `save_to_disk` dir's marker.
DATASET_SUFFIXES = (".jsonl", ".parquet", ".arrow", ".json", ".csv")
HUB_PREFIX = "hf:"


def dataset_dir(value: str, roots: Roots, field: str = "spec.data", must_exist: bool = True) -> Path | str:
    """A dataset dir under the data root, or a hub name (`hf:owner/name`) passed on as it is."""
    if value.startswith(HUB_PREFIX):
        if not _HUB_NAME.match(value.removeprefix(HUB_PREFIX)):
            raise InvalidArgument(f"a hub dataset is 'hf:owner/name', got {value!r}", field)
        return value
    path = confine(value or DEFAULT_DATASET, roots.data, field)
    if must_exist and not path.is_dir():
        raise NotFound(f"no dataset dir {value or DEFAULT_DATASET!r} under {roots.data}", field)
    if must_exist:
        _splits_inside(path, roots.data, value, field)
    has_train = (path / "dataset_dict.json").is_file() or any(
        (path / f"train{suffix}").is_file() for suffix in DATASET_SUFFIXES
    )
    if must_exist and not has_train:
        raise NotFound(
            f"dataset {value or DEFAULT_DATASET!r} has no train split (train.jsonl, .parquet, .arrow, .json or .csv)",
            field,
        )
    return path


def _splits_inside(path: Path, root: Path, value: str, field: str) -> None:
    """A dataset dir inside the root whose split files are links out of it would still read outside files."""
    real_root = Path(os.path.realpath(root))
    names = ["dataset_dict.json", *SPLITS]
    names += [f"{split}{suffix}" for split in SPLITS for suffix in DATASET_SUFFIXES]
    for name in names:
        real = Path(os.path.realpath(path / name))
        if (path / name).exists() and real_root not in real.parents:
            raise InvalidArgument(
                f"{clip(repr(value), 200)}: {name} is a link to outside the allowed root {root}", field
            )


def parse_spec(values: Mapping[str, Any], field: str = "spec") -> RunSpec:
    """A RunSpec from the fields a message or a record sets; an error names the field under `field`."""
    try:
        return RunSpec.from_dict(dict(values))
    except SpecError as exc:
        raise InvalidArgument(exc.problem, f"{field}.{exc.field}") from None


def overlay_spec(base: RunSpec, overrides: Mapping[str, Any], field: str = "spec") -> RunSpec:
    """`base` with `overrides` (an arm's, a trial's), checked; an error names the field under `field`."""
    return parse_spec({**base.given(), **overrides}, field)


def check_spec(spec: RunSpec, roots: Roots, field: str = "spec", must_exist: bool = True) -> RunSpec:
    """Confine the spec's model and data to this machine's roots; the spec to run, with them as absolute
    paths here (the spec as submitted is what a record keeps: roots differ between machines)."""
    model = model_dir(spec.model, roots, f"{field}.model", must_exist=False)
    data = dataset_dir(spec.data, roots, f"{field}.data", must_exist=False)
    if must_exist:
        model_dir(spec.model, roots, f"{field}.model")
        dataset_dir(spec.data, roots, f"{field}.data")
    return spec.at(str(model), str(data))
