"""The rules for a comparison's arms and seeds: checked by the gateway before it forwards a request and by the
comparator that runs it, from this one place; the web UI's form states the same limits."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.errors import InvalidArgument
from services.common.validation import check_range

MAX_ARMS = 32
MAX_SEEDS = 32
MAX_SEED = 2**31 - 1
MAX_ARM_NAME = 64


def check_arm_names(names: Sequence[str]) -> None:
    """1-32 arms with distinct names of 1-64 characters, each usable in a path and a label."""
    check_range(len(names), 1, MAX_ARMS, "arms")
    for i, name in enumerate(names):
        if not 1 <= len(name) <= MAX_ARM_NAME:
            raise InvalidArgument(f"must be 1-{MAX_ARM_NAME} characters, got {len(name)}", f"arms[{i}].name")
        if "/" in name or any(ord(c) < 32 for c in name):
            raise InvalidArgument("must not contain '/' or control characters", f"arms[{i}].name")
    if len(set(names)) != len(names):
        raise InvalidArgument("arm names must be unique", "arms")


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds every arm runs with (none = [0]): 1-32 distinct values in 0..2**31-1."""
    seeds = list(seeds) or [0]
    check_range(len(seeds), 1, MAX_SEEDS, "seeds")
    if len(set(seeds)) != len(seeds):
        raise InvalidArgument("seeds must be distinct", "seeds")
    for i, seed in enumerate(seeds):
        check_range(seed, 0, MAX_SEED, f"seeds[{i}]")
    return [int(s) for s in seeds]
