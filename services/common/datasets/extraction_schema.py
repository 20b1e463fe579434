"""The extraction task's contract: record fields, the system prompt that states them, canonical JSON.

Generator and scorer both import from here, so what the prompt promises and what is scored cannot drift.
"""

from __future__ import annotations

import json
from typing import Any

TASK_NAME = "extraction"
# Bump when the generator's output for a given seed changes, so cached datasets are known to be stale.
TASK_VERSION = 1

FIELDS: tuple[str, ...] = ("name", "age", "city", "date")

# Short on purpose: every token here is paid on every training step (max sequence length 256 on a CPU),
# but it states each rule the references follow so that the base model has a fair chance.
SYSTEM_PROMPT = (
    'Return JSON {"records": [{"name": str, "age": int, "city": str, "date": "YYYY-MM-DD"}]} with one record '
    "per person who joins, in order. No titles; city of work; start date; null if not stated. Ignore others."
)

# A description for dataset.json (JSON-Schema flavoured, for people and UIs rather than a validator).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "records": {
            "type": "array",
            "description": "one per person who joins, in order of mention",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "first and last name, no title"},
                    "age": {"type": ["integer", "null"]},
                    "city": {"type": ["string", "null"], "description": "where the person works"},
                    "date": {"type": ["string", "null"], "description": "start date, YYYY-MM-DD"},
                },
                "required": list(FIELDS),
            },
        }
    },
    "required": ["records"],
}


def canonical_json(records: list[dict[str, Any]]) -> str:
    """The one serialisation of an answer: fixed key order and separators, so equal answers are equal text."""
    ordered = [{name: record[name] for name in FIELDS} for record in records]
    return json.dumps({"records": ordered}, separators=(", ", ": "))
