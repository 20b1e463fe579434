"""Training data: JSONL in mlx_lm's three formats, tokenized with the model's chat template, prompts masked
from the loss, and packed into fixed-length rows so padding does not waste compute.

Formats (detected per file from the first record; every record must then follow it):
  text        {"text": "..."}                                  loss on every token
  completion  {"prompt": "...", "completion": "..."}           loss on the completion
  chat        {"messages": [{"role": ..., "content": ...}]}     loss on the assistant turns
              (+ "tools": [...], mlx-lm's tool-calling format, rendered by the chat template)

What carries the loss is the spec's `mask_prompt` (MASK_MODES): "assistant" (every assistant turn of a chat,
the completion of a prompt/completion record), "last_assistant" (only the final answer, as mlx_lm does), or
"none" (every token, prompts included).
Rows are read by `sources` (JSONL, parquet, arrow, json, csv, hub) and mapped to a format by `layouts`
(column mapping, Alpaca, ShareGPT) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import DatasetError

from .layouts import Columns, normalize
from .sources import Rows, is_hub_name, is_saved_dataset, read_hub, read_rows, read_saved, split_files
from .sources import read_jsonl as read_jsonl

SPLITS = ("train", "valid", "test")
MASK_MODES = ("assistant", "last_assistant", "none")
# The roles chat templates render (OpenAI's chat roles, which mlx-lm's tool-calling format uses); anything else
# is a typo a template would silently drop or fail on mid-training.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
FORMATS = {"text": ("text",), "completion": ("prompt", "completion"), "chat": ("messages",)}


@dataclass(frozen=True)
class Sample:
    tokens: tuple[int, ...]
    # [start, end) token ranges that carry the loss (a target token is learned iff it lies in one).
    loss_spans: tuple[tuple[int, int], ...]
    truncated: bool

    @property
    def prompt_len(self) -> int:
        """Tokens before the first learned one (the whole sample when nothing is learned)."""
        return self.loss_spans[0][0] if self.loss_spans else len(self.tokens)


@dataclass(frozen=True)
class Split:
    path: Path
    format: str
    samples: list[Sample]
    records: list[dict[str, Any]]
    truncated: int  # how many samples were cut to max_seq_length

    @property
    def tokens(self) -> int:
        return sum(len(s.tokens) for s in self.samples)


def detect_format(record: dict[str, Any], path: Path, line: int) -> str:
    for name, keys in FORMATS.items():
        if all(k in record for k in keys):
            return name
    raise DatasetError(
        path,
        f"no known format: expected keys 'messages', 'prompt'+'completion' or 'text'; got {sorted(record)}",
        line,
    )


def check_record(record: dict[str, Any], fmt: str, path: Path, line: int) -> None:
    for key in FORMATS[fmt]:
        if key not in record:
            raise DatasetError(path, f"missing key '{key}' (the file's format is '{fmt}')", line)
    if fmt == "chat":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DatasetError(path, "'messages' must be a non-empty list", line)
        for i, message in enumerate(messages):
            if isinstance(message, dict) and "tool_calls" in message:
                message.setdefault("content", "")  # a tool-calling turn may say nothing
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise DatasetError(path, f"messages[{i}] needs 'role' and 'content'", line)
            if message["role"] not in CHAT_ROLES:
                raise DatasetError(
                    path,
                    f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; got {str(message['role'])[:40]!r}",
                    line,
                )
            if not isinstance(message["content"], str):
                raise DatasetError(path, f"messages[{i}].content must be a string", line)
        if "tools" in record and not isinstance(record["tools"], list):
            raise DatasetError(path, "'tools' must be a list of tool schemas (mlx-lm's tools format)", line)
        if messages[-1]["role"] != "assistant":
            raise DatasetError(path, "the last message must be the assistant's (it is what is learned)", line)
    else:
        for key in FORMATS[fmt]:
            if not isinstance(record[key], str) or not record[key]:
                raise DatasetError(path, f"'{key}' must be a non-empty string", line)


def _template(
    tokenizer: Any, messages: list[dict], generation_prompt: bool, tools: list | None = None
) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=generation_prompt, return_dict=False
    )
    return list(out)


def encode(record: dict[str, Any], fmt: str, tokenizer: Any) -> tuple[list[int], int]:
    """Token ids of a record and where its loss starts."""
    if fmt == "text":
        tokens = tokenizer.encode(record["text"])
        if tokens[-1] != tokenizer.eos_token_id:
            tokens.append(tokenizer.eos_token_id)
        return tokens, 0
    if fmt == "completion":
        messages = [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["completion"]},
        ]
    else:
        messages = record["messages"]
    tools = record.get("tools")
    tokens = _template(tokenizer, messages, generation_prompt=False, tools=tools)
    prompt = _template(tokenizer, messages[:-1], generation_prompt=True, tools=tools)
    return tokens, len(prompt)


def encode_with_spans(
    record: dict[str, Any], fmt: str, tokenizer: Any, mask: str = "assistant"
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a record and the [start, end) ranges of them that carry the loss under `mask`."""
    tokens, prompt_len = encode(record, fmt, tokenizer)
    if mask == "none" or fmt == "text":
        return tokens, [(0, len(tokens))]
    if mask == "last_assistant" or fmt == "completion":
        return tokens, [(prompt_len, len(tokens))]
    # Every assistant turn: each one's span runs from the end of the generation prompt that precedes it to
    # the end of the conversation rendered through it. That needs a template whose rendering of a prefix of
    # the conversation is a prefix of the whole (ChatML, Llama 3 and most others are).
    messages, tools = record["messages"], record.get("tools")
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_template(tokenizer, messages[:i], generation_prompt=True, tools=tools)) if i else 0
        through = _template(tokenizer, messages[: i + 1], generation_prompt=False, tools=tools)
        if through != tokens[: len(through)]:
            raise DatasetError(
                "<record>",
                "the chat template renders earlier turns differently once later ones follow, so earlier "
                "assistant turns cannot be located; use mask_prompt=last_assistant",
            )
        spans.append((start, len(through)))
    return tokens, spans


def prompt_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation up to (not including) the answer: what a model is asked at test time."""
    if "messages" in record:
        return record["messages"][:-1]
    if "prompt" in record:
        return [{"role": "user", "content": record["prompt"]}]
    raise DatasetError("<record>", "text records have no prompt to generate from")


def reference_answer(record: dict[str, Any]) -> str:
    if "messages" in record:
        return record["messages"][-1]["content"]
    return record.get("completion", "")


def mask_mode(mask_prompt: str | bool) -> str:
    """The spec's mask_prompt as one of MASK_MODES (a bool is the old spelling: True = assistant)."""
    if isinstance(mask_prompt, bool):
        return "assistant" if mask_prompt else "none"
    return mask_prompt


def load_split(
    path: Path,
    tokenizer: Any,
    max_seq_length: int,
    mask_prompt: str | bool = "assistant",
    columns: Columns | None = None,
    rows: Rows | None = None,
) -> Split:
    """One split from `path` (or from `rows` already read from it, e.g. a hub split)."""
    mask = mask_mode(mask_prompt)
    columns = columns or Columns()
    numbered = [
        (n, normalize(r, columns, path, n)) for n, r in (rows if rows is not None else read_rows(path))
    ]
    fmt = detect_format(numbered[0][1], path, numbered[0][0])
    samples, truncated = [], 0
    for line, record in numbered:
        check_record(record, fmt, path, line)
        try:
            tokens, spans = encode_with_spans(record, fmt, tokenizer, mask)
        except DatasetError as exc:
            raise DatasetError(path, exc.problem, line) from None
        # A row holds max_seq_length inputs plus the one-token shift for targets.
        limit = max_seq_length + 1
        cut = len(tokens) > limit
        if cut:
            truncated += 1
            tokens = tokens[:limit]
            spans = [(a, min(b, limit)) for a, b in spans if a < limit]
        # Token 0 is never a target, so a span must reach past it to teach anything.
        if not any(b > max(a, 1) for a, b in spans):
            raise DatasetError(
                path,
                f"the prompt alone is {spans[0][0] if spans else len(tokens)} tokens, leaving nothing to learn "
                f"within max_seq_length={max_seq_length}",
                line,
            )
        samples.append(Sample(tuple(tokens), tuple(spans), cut))
    return Split(path, fmt, samples, [r for _, r in numbered], truncated)


def load_dataset(
    data_dir: Path | str,
    tokenizer: Any,
    max_seq_length: int,
    mask_prompt: str | bool = "assistant",
    columns: Columns | None = None,
) -> dict[str, Split]:
    """The train, valid (and test) splits of a dataset dir, a `save_to_disk` dir or a hub name (`hf:...`)."""
    if is_hub_name(str(data_dir)):
        read = read_hub(str(data_dir))
    else:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DatasetError(data_dir, "dataset directory not found")
        if is_saved_dataset(data_dir):
            read = read_saved(data_dir)
        else:
            files = split_files(data_dir)
            read = {name: (str(path), None) for name, path in files.items()}
    splits = {}
    for name in SPLITS:
        if name in read:
            where, rows = read[name]
            splits[name] = load_split(Path(where), tokenizer, max_seq_length, mask_prompt, columns, rows)
    for required in ("train", "valid"):
        if required not in splits:
            raise DatasetError(
                f"{data_dir}/{required}.jsonl",
                "file not found (train and valid are required; .jsonl, .parquet, .arrow, .json or .csv)",
            )
    return splits


# ---- batching -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # (B, L) int32
    targets: np.ndarray  # (B, L) int32
    loss_mask: np.ndarray  # (B, L) float32: 1 where the target is learned
    segments: np.ndarray | None  # (B, L) int32: which packed sample each input belongs to (None = unpacked)

    @property
    def tokens(self) -> int:
        """Tokens processed, prompts included (what tokens/s counts, as mlx_lm does)."""
        return int((self.segments > 0).sum()) if self.segments is not None else int(self.loss_mask.size)

    @property
    def loss_tokens(self) -> int:
        return int(self.loss_mask.sum())


def pack_rows(samples: list[Sample], order: np.ndarray, row_length: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of samples (by index) into rows of at most row_length tokens."""
    by_length = sorted(order.tolist(), key=lambda i: -len(samples[i].tokens))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in by_length:
        need = len(samples[i].tokens)
        for r, space in enumerate(free):
            if space >= need:
                rows[r].append(i)
                free[r] -= need
                break
        else:
            rows.append([i])
            free.append(row_length - need)
    return rows


def _row_arrays(samples: list[Sample], members: list[int], length: int) -> tuple[np.ndarray, ...]:
    tokens = np.zeros(length + 1, np.int32)
    learn = np.zeros(length + 1, np.float32)  # per token: is it a completion token
    seg = np.zeros(length + 1, np.int32)
    pos = 0
    for k, i in enumerate(members, start=1):
        sample = samples[i]
        n = len(sample.tokens)
        tokens[pos : pos + n] = sample.tokens
        for start, end in sample.loss_spans:
            learn[pos + start : pos + end] = 1.0
        seg[pos : pos + n] = k
        pos += n
    inputs, targets = tokens[:-1], tokens[1:]
    # A target is learned only if it is a completion token of the same sample as its input.
    mask = learn[1:] * ((seg[1:] == seg[:-1]) & (seg[:-1] > 0))
    return inputs, targets, mask.astype(np.float32), seg[:-1]


class BatchPlan:
    """Deterministic batches for one split: epoch e's order depends only on (seed, e), so a resume can
    rebuild exactly the batch it stopped at from (epoch, index)."""

    def __init__(self, split: Split, batch_size: int, max_seq_length: int, packing: bool, seed: int):
        if len(split.samples) < 1:
            raise DatasetError(split.path, "no samples")
        self.split = split
        self.batch_size = batch_size
        self.length = max_seq_length
        self.packing = packing
        self.seed = seed
        self._epoch: int | None = None
        self._rows: list[list[int]] = []

    def _plan(self, epoch: int, shuffle: bool) -> list[list[int]]:
        n = len(self.split.samples)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if shuffle else np.arange(n)
        if self.packing:
            rows = pack_rows(self.split.samples, order, self.length + 1)
            if shuffle:
                rows = [rows[i] for i in rng.permutation(len(rows))]
        else:
            # Length-bucketed: neighbours in length share a batch, so padding stays small.
            by_len = sorted(order.tolist(), key=lambda i: len(self.split.samples[i].tokens))
            rows = [[i] for i in by_len]
            groups = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
            if shuffle:
                groups = [groups[i] for i in rng.permutation(len(groups))]
            rows = [r for g in groups for r in g]
        return rows

    def batches_per_epoch(self, shuffle: bool = True) -> int:
        rows = self._rows_for(0, shuffle)
        return max(1, len(rows) // self.batch_size)

    def _rows_for(self, epoch: int, shuffle: bool) -> list[list[int]]:
        key = (epoch, shuffle)
        if self._epoch != key:
            self._rows = self._plan(epoch, shuffle)
            self._epoch = key
        return self._rows

    def batch(self, epoch: int, index: int, shuffle: bool = True) -> Batch:
        rows = self._rows_for(epoch, shuffle)
        if len(rows) < self.batch_size:
            # Fewer rows than a batch: repeat rows (a tiny dataset still trains with the asked batch shape).
            rows = (rows * (self.batch_size // len(rows) + 1))[: self.batch_size]
        chosen = rows[index * self.batch_size : (index + 1) * self.batch_size]
        # Pad to the batch's longest row rounded up to a multiple of 32 (as mlx_lm pads), not to max_seq_length:
        # packed rows rarely fill it, and every padding position costs as much as a real token. Few shapes
        # (length/32 of them) keep the compiled step's retracing bounded.
        samples = self.split.samples
        longest = max(sum(len(samples[i].tokens) for i in members) for members in chosen) - 1
        length = min(self.length, 32 * ((longest + 31) // 32))
        parts = [_row_arrays(self.split.samples, members, length) for members in chosen]
        inputs, targets, mask, seg = (np.stack(p) for p in zip(*parts))
        return Batch(inputs, targets, mask, seg)

    def epoch_batches(self, shuffle: bool = False, limit: int = -1):
        total = self.batches_per_epoch(shuffle)
        if limit > 0:
            total = min(total, limit)
        for index in range(total):
            yield self.batch(0, index, shuffle)
