"""Row layouts turned into the engine's formats (text, completion, chat), before validation and tokenizing.

column mapping  prompt_field / completion_field / messages_field name the columns to read
Alpaca          {"instruction", "input"?, "output", "system"?}            -> chat (user, assistant)
ShareGPT        {"conversations": [{"from": "human"|"gpt"|..., "value"}]} -> chat
system_field    that column's text becomes a leading system turn of the chat
tools           mlx-lm's tool-calling chat: {"messages": [...], "tools": [...]} is kept as is; assistant
                turns may carry `tool_calls` instead of content, and `tool` turns the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import DatasetError

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function_response": "tool",
    "observation": "tool",
}


@dataclass(frozen=True)
class Columns:
    """Which columns hold what; '' means the format's own key."""

    prompt: str = ""
    completion: str = ""
    messages: str = ""
    system: str = ""

    @classmethod
    def of(cls, spec: Any) -> Columns:
        return cls(spec.prompt_field, spec.completion_field, spec.messages_field, spec.system_field)

    @property
    def mapped(self) -> bool:
        return any((self.prompt, self.completion, self.messages, self.system))


def _chat(turns: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": turns}
    if "tools" in record:
        out["tools"] = record["tools"]
    return out


def _sharegpt(turns: Any, path: Path, line: int) -> list[dict[str, Any]]:
    if not isinstance(turns, list):
        raise DatasetError(path, "'conversations' must be a list of {from, value} turns", line)
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DatasetError(path, f"conversations[{i}] needs 'from' and 'value' (ShareGPT layout)", line)
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            known = ", ".join(sorted(SHAREGPT_ROLES))
            raise DatasetError(path, f"conversations[{i}].from {turn['from']!r} is not one of {known}", line)
        messages.append({"role": role, "content": turn["value"]})
    return messages


def _column(record: dict[str, Any], name: str, field: str, path: Path, line: int) -> Any:
    if name not in record:
        raise DatasetError(path, f"no column '{name}' (named by {field}); columns: {sorted(record)}", line)
    return record[name]


def normalize(record: dict[str, Any], columns: Columns, path: Path, line: int) -> dict[str, Any]:
    """The record in one of the engine's formats (text / prompt+completion / messages [+ tools])."""
    if columns.messages:
        out = _chat(_column(record, columns.messages, "messages_field", path, line), record)
    elif columns.prompt or columns.completion:
        out = {
            "prompt": _column(record, columns.prompt or "prompt", "prompt_field", path, line),
            "completion": _column(record, columns.completion or "completion", "completion_field", path, line),
        }
    elif "messages" in record:
        out = record
    elif "conversations" in record:
        out = _chat(_sharegpt(record["conversations"], path, line), record)
    elif "instruction" in record and "output" in record:
        instruction = str(record["instruction"])
        extra = str(record.get("input") or "")
        user = f"{instruction}\n\n{extra}" if extra else instruction
        turns = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
        if record.get("system"):
            turns.insert(0, {"role": "system", "content": record["system"]})
        out = {"messages": turns}
    else:
        out = record
    if columns.system:
        system = _column(record, columns.system, "system_field", path, line)
        if not isinstance(system, str):
            raise DatasetError(path, f"column '{columns.system}' (system_field) must be text", line)
        if "prompt" in out and "messages" not in out:
            turns = [
                {"role": "user", "content": out["prompt"]},
                {"role": "assistant", "content": out["completion"]},
            ]
            out = {"messages": turns}
        if "messages" in out and system:
            messages = out["messages"]
            if isinstance(messages, list) and not (messages and messages[0].get("role") == "system"):
                out = {**out, "messages": [{"role": "system", "content": system}, *messages]}
    return out
