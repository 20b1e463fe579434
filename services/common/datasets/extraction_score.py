"""Scores model outputs on the extraction task: exact match of the whole answer, plus per-field accuracy.

Parsing is tolerant (code fences, chatter around the JSON) because a small model that gets the facts right
but wraps them in prose should lose on format only through `parse_rate`, not on every field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.common.datasets.extraction_schema import FIELDS

SCORER_NAME = "extraction_exact_match"


@dataclass(frozen=True)
class ExtractionScore:
    n: int
    exact_match: float  # fraction of samples whose parsed object equals the reference object
    # Per field, over record slots aligned by position (the schema asks for order of mention); a record
    # the prediction misses or adds counts as wrong for every field.
    field_accuracy: dict[str, float] = field(default_factory=dict)
    record_count_accuracy: float = 0.0  # fraction with as many records as the reference
    parse_rate: float = 0.0  # fraction where `parse_prediction` found a JSON object

    @property
    def mean_field_accuracy(self) -> float:
        """One number between exact match and nothing: how much of the content came out right."""
        return sum(self.field_accuracy.values()) / len(self.field_accuracy) if self.field_accuracy else 0.0


def parse_prediction(text: str) -> dict[str, Any] | None:
    """The first balanced JSON object in a model output (code fences and chatter around it ignored), or None.

    Braces inside JSON strings are skipped when balancing, so a name like "{x}" does not cut the object
    short. A "{" that never closes or does not parse moves the search to the next one.
    """
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is not None:
            try:
                value = json.loads(text[start:end])
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    return None


def score(predictions: list[str], references: list[str]) -> ExtractionScore:
    """Score raw model outputs against reference answers (the assistant messages of the dataset)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(references)
    if n == 0:
        return ExtractionScore(n=0, exact_match=0.0, field_accuracy={name: 0.0 for name in FIELDS})
    exact = parsed = count_right = slots = 0
    field_right = dict.fromkeys(FIELDS, 0)
    for prediction, reference in zip(predictions, references, strict=True):
        expected = json.loads(reference)
        got = parse_prediction(prediction)
        parsed += got is not None
        exact += got is not None and _same(got, expected)
        got_records = _records(got)
        want_records = expected["records"]
        count_right += len(got_records) == len(want_records)
        # Slots past the shorter list (records missed or made up) stay in the denominator with no credit.
        slots += max(len(got_records), len(want_records))
        for got_record, want_record in zip(got_records, want_records, strict=False):
            for name in FIELDS:
                field_right[name] += name in got_record and _same(got_record[name], want_record[name])
    return ExtractionScore(
        n=n,
        exact_match=exact / n,
        field_accuracy={name: right / slots if slots else 1.0 for name, right in field_right.items()},
        record_count_accuracy=count_right / n,
        parse_rate=parsed / n,
    )


def _records(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    if obj is None or not isinstance(obj.get("records"), list):
        return []
    # A non-object entry still takes a slot, so it counts as a wrong record rather than vanishing.
    return [record if isinstance(record, dict) else {} for record in obj["records"]]


def _same(got: Any, want: Any) -> bool:
    """Equality of parsed JSON, except that True is not 1 (Python's == says it is); 32.0 still equals 32,
    since JSON has only one number type."""
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    return got == want


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the "}" that closes the "{" at `start`, or None if it never closes."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
