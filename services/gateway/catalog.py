"""What the gateway can tell about models and datasets on disk (no gRPC): model dirs under the models root,
dataset dirs under the data root, a line-by-line dataset check, and a preview with token counts.

Record rules and tokenization are the ones training uses (services/common/datasets/samples.py), so what
the gateway accepts is what training accepts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import AlreadyExists, FailedPrecondition
from services.common.heap import freeze_long_lived
from services.common.model_config import read_model_config

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class ModelInfo:
    name: str
    path: str
    model_type: str = ""
    quant_bits: int = 0
    num_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    size_bytes: int = 0
    chat_template: bool = False
    shape: dict[str, Any] = field(
        default_factory=dict
    )  # the memory model's ModelShape, for RecommendBatchSize


@dataclass
class SplitInfo:
    split: str
    rows: int
    size_bytes: int


@dataclass
class DatasetInfo:
    name: str
    path: str
    format: str = ""
    splits: list[SplitInfo] = field(default_factory=list)


@dataclass
class DatasetProblem:
    file: str
    line: int
    problem: str


@dataclass
class PreviewRow:
    line: int
    json: str
    format: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _shape(config: dict) -> dict[str, Any]:
    from services.common.memory import ModelShape

    try:
        return dataclasses.asdict(ModelShape.from_config(config))
    except (KeyError, TypeError, ZeroDivisionError):
        return {}


def describe_model(path: Path) -> ModelInfo:
    """FailedPrecondition when config.json is broken (model_config.read_model_config says how)."""
    config = read_model_config(path)
    tokenizer_config = path / "tokenizer_config.json"
    try:
        has_template = (path / "chat_template.jinja").exists() or (
            tokenizer_config.exists() and "chat_template" in json.loads(tokenizer_config.read_text())
        )
    except (OSError, ValueError, RecursionError):  # a broken tokenizer config: listed, without a template
        has_template = False
    try:
        return ModelInfo(
            name=path.name,
            path=str(path),
            model_type=str(config.get("model_type", "")),
            quant_bits=int((config.get("quantization") or {}).get("bits", 0)),
            num_layers=int(config.get("num_hidden_layers", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
            vocab_size=int(config.get("vocab_size", 0)),
            size_bytes=sum(f.stat().st_size for f in path.glob("*.safetensors")),
            chat_template=has_template,
            shape=_shape(config),
        )
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise FailedPrecondition(
            f"{path.name}/config.json: {type(exc).__name__}: {str(exc)[:200]}", "model"
        ) from None


def list_models(root: Path) -> list[ModelInfo]:
    """The usable model dirs under `root`; a broken one is left out with a warning in the log (once per
    version of its config.json), so it cannot fail the list for everyone."""
    if not root.is_dir():
        return []
    models = []
    for path in sorted(root.iterdir()):
        if not (path / "config.json").is_file():
            continue
        try:
            models.append(describe_model(path))
        except FailedPrecondition as exc:
            _warn_once(path, exc.message)
    return models


_WARNED: set[tuple[str, int]] = set()


def _warn_once(path: Path, problem: str) -> None:
    try:
        version = (path / "config.json").stat().st_mtime_ns
    except OSError:
        version = 0
    if (str(path), version) not in _WARNED:
        _WARNED.add((str(path), version))
        log.warning("model dir left out of the list: %s", problem, extra={"model_dir": str(path)})


def _split_files(path: Path) -> dict[str, Path]:
    from services.common.datasets.sources import split_files
    from services.common.errors import DatasetError

    try:
        return split_files(path)
    except DatasetError:
        return {}


MAPPING_FIELDS = ("prompt_field", "completion_field", "messages_field", "system_field")


def _mapping(fields: Mapping[str, str] | None) -> dict[str, str]:
    """RunSpec's column-mapping fields (prompt_field, ...) -> layouts.Columns' keyword arguments."""
    fields = fields or {}
    return {name.removesuffix("_field"): str(fields.get(name) or "").strip() for name in MAPPING_FIELDS}


def has_split(path: Path, split: str) -> bool:
    return split in _split_files(path)


def _rows(path: Path) -> int:
    if path.suffix != ".jsonl":
        from services.common.datasets.sources import read_rows

        return len(read_rows(path))
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _format_of(path: Path) -> str:
    """The engine format of the file's first row, after the engine's layout mapping ("" when unreadable)."""
    from services.common.datasets.layouts import Columns, normalize
    from services.common.datasets.samples import FORMATS
    from services.common.datasets.sources import read_rows
    from services.common.errors import DatasetError

    try:
        number, record = _first_row(path) if path.suffix == ".jsonl" else read_rows(path)[0]
        record = normalize(record, Columns(), path, number)
    except (DatasetError, IndexError, ValueError):
        return ""
    return next((name for name, keys in FORMATS.items() if all(k in record for k in keys)), "")


def _first_row(path: Path) -> tuple[int, dict]:
    from services.common.datasets.sources import parse_line

    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                return number, parse_line(line, path, number)
    raise IndexError("empty")


def describe_dataset(path: Path) -> DatasetInfo:
    """A dataset dir's splits, rows and format, whatever file types hold them (jsonl, parquet, arrow, json, csv)."""
    files = _split_files(path)
    splits = []
    for split, file in files.items():
        try:
            rows = _rows(file)
        except Exception:  # an unreadable file still lists, with 0 rows; validation names the problem
            rows = 0
        splits.append(SplitInfo(split, rows, file.stat().st_size))
    fmt = _format_of(files["train"]) if "train" in files else ""
    return DatasetInfo(name=path.name, path=str(path), format=fmt, splits=splits)


def list_datasets(root: Path) -> list[DatasetInfo]:
    if not root.is_dir():
        return []
    # Dot dirs are uploads being checked (create_dataset), not datasets yet.
    return [
        describe_dataset(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and "train" in _split_files(p)
    ]


def validate_dataset(
    path: Path, max_problems: int = 50, columns: Mapping[str, str] | None = None
) -> tuple[bool, list[DatasetProblem]]:
    """Every line of every split: JSON object, one known format per file (after the column mapping: RunSpec's
    prompt_field, completion_field, messages_field, system_field), the engine's per-record rules."""
    from services.common.datasets.layouts import Columns, normalize
    from services.common.datasets.samples import check_record, detect_format
    from services.common.datasets.sources import parse_line
    from services.common.errors import DatasetError

    columns = Columns(**_mapping(columns))

    problems: list[DatasetProblem] = []

    def add(file: Path, line: int, problem: str) -> bool:
        problems.append(DatasetProblem(str(file), line, problem))
        return len(problems) < max_problems

    files = _split_files(path)
    for required in ("train", "valid"):
        if required not in files:
            if not add(path / f"{required}.jsonl", 0, "file not found (train and valid are required)"):
                return False, problems
    for split in SPLITS:
        file = files.get(split)
        if file is None:
            continue
        if file.suffix != ".jsonl":
            if not _validate_table(file, add, columns):
                return False, problems
            continue
        fmt, count = "", 0
        with open(file, encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                count += 1
                try:
                    record = parse_line(text, file, number)
                    if columns.mapped:
                        record = normalize(record, columns, file, number)
                    fmt = fmt or detect_format(record, file, number)
                    check_record(record, fmt, file, number)
                except DatasetError as exc:
                    if not add(file, number, exc.problem):
                        return False, problems
        if count == 0 and not add(file, 0, "file is empty"):
            return False, problems
    return not problems, problems


def _validate_table(file: Path, add, columns) -> bool:
    """A parquet/arrow/json/csv split, row by row, through the engine's reader, layouts and record rules."""
    from services.common.datasets.layouts import normalize
    from services.common.datasets.samples import check_record, detect_format
    from services.common.datasets.sources import read_rows
    from services.common.errors import DatasetError

    try:
        rows = read_rows(file)
    except DatasetError as exc:
        return add(file, 0, exc.problem)
    fmt = ""
    for number, record in rows:
        try:
            record = normalize(record, columns, file, number)
            fmt = fmt or detect_format(record, file, number)
            check_record(record, fmt, file, number)
        except DatasetError as exc:
            if not add(file, number, exc.problem):
                return False
    return True


UPLOAD_RECORD = ".peftlab-upload.json"  # who created a dataset dir and how many bytes it holds


def uploads_of(root: Path, user: str) -> tuple[int, int]:
    """(datasets, bytes) that `user` has created under `root` with create_dataset."""
    count = size = 0
    if not root.is_dir():
        return 0, 0
    for record in root.glob(f"*/{UPLOAD_RECORD}"):
        try:
            upload = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(upload, dict) and upload.get("user") == user:
            count += 1
            size += int(upload.get("bytes") or 0)
    return count, size


def create_dataset(
    root: Path, name: str, files: dict[str, bytes], max_problems: int = 50, user: str = ""
) -> tuple[DatasetInfo | None, list[DatasetProblem]]:
    """Write `files` (split -> JSONL bytes) as the dataset dir `root/name` when every line passes
    `validate_dataset`; else write nothing. Returns (the dataset or None, the problems, by split file name).
    The dir records who uploaded it and its size (UPLOAD_RECORD), for the per-user limits."""
    target = root / name
    if target.exists():
        raise AlreadyExists(f"a dataset dir {name!r} already exists under {root}", "name")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".upload-{name}-", dir=root))
    try:
        for split, data in files.items():
            if data:
                (staging / f"{split}.jsonl").write_bytes(data)
        valid, problems = validate_dataset(staging, max_problems)
        for problem in problems:
            problem.file = Path(problem.file).name
        if not valid:
            return None, problems
        upload = {"user": user, "bytes": sum(len(b) for b in files.values()), "created_at": int(time.time())}
        (staging / UPLOAD_RECORD).write_text(json.dumps(upload))
        os.chmod(staging, 0o755)
        try:
            staging.rename(target)  # atomic: a dataset dir is either absent or complete
        except OSError:
            raise AlreadyExists(f"a dataset dir {name!r} already exists under {root}", "name") from None
        return describe_dataset(target), []
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_TOKENIZER_LOCK = threading.Lock()


def warm_tokenizer_imports() -> None:
    """Import what loading a tokenizer imports (transformers, and torch where installed: about 5 s on a 2-core
    VM), so that the first SubmitRun or PreviewDataset does not wait for it; then freeze those modules out of
    the garbage collector's way. The gateway runs it in the background at start."""
    with _TOKENIZER_LOCK, _ENGINE_TOKENIZER_LOCK:  # the order nothing else takes both in: no deadlock
        start = time.monotonic()
        try:
            from mlx_lm.utils import load_tokenizer  # noqa: F401
            from transformers import AutoTokenizer  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - a missing extra shows at the first load, in words
            log.info("tokenizer imports not warmed (%s: %s)", type(exc).__name__, str(exc)[:200])
            return
        log.info("tokenizer imports warmed", extra={"seconds": round(time.monotonic() - start, 1)})
    freeze_long_lived("the tokenizer imports")


def _tokenizer(model_dir: str) -> Any:
    # One at a time: two first calls at once (two previews in flight) made `from transformers import
    # AutoTokenizer` fail on a half-initialized module in one of the gRPC threads.
    with _TOKENIZER_LOCK:
        return _load_tokenizer(model_dir)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    read_model_config(Path(model_dir))  # a broken config.json is named, not a transformers traceback
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        freeze_long_lived(f"the tokenizer of {Path(model_dir).name}")
        return tokenizer
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(
            f"cannot load the tokenizer of model {Path(model_dir).name!r} "
            f"({type(exc).__name__}: {str(exc)[:300]})",
            "model",
        ) from None


def preview_dataset(
    path: Path, split: str, rows: int, model_dir: Path, columns: Mapping[str, str] | None = None
) -> tuple[list[PreviewRow], int]:
    """The first `rows` records of a split, as the engine reads them (after the column mapping: RunSpec's
    prompt_field, completion_field, messages_field, system_field), with their prompt/completion token counts under the model's
    tokenizer and chat template, and the split's row count."""
    from services.common.datasets.layouts import Columns, normalize
    from services.common.datasets.samples import check_record, detect_format, encode
    from services.common.datasets.sources import parse_line, read_rows

    file = _split_files(path).get(split, path / f"{split}.jsonl")
    tokenizer = _tokenizer(str(model_dir))
    out: list[PreviewRow] = []
    fmt = ""
    if file.suffix == ".jsonl":
        with open(file, encoding="utf-8") as fh:
            numbered = [(n, text) for n, text in enumerate(fh, start=1) if text.strip()]
        total = len(numbered)
        head = [(n, parse_line(text, file, n)) for n, text in numbered[:rows]]
    else:
        table = read_rows(file)
        total, head = len(table), table[:rows]
    for number, record in head:
        # Alpaca / ShareGPT rows (and mapped columns) show as the chat or prompt/completion they become.
        record = normalize(record, Columns(**_mapping(columns)), file, number)
        fmt = fmt or detect_format(record, file, number)
        check_record(record, fmt, file, number)  # what the template would choke on is named first
        tokens, prompt_len = encode(record, fmt, tokenizer)
        out.append(
            PreviewRow(
                line=number,
                json=json.dumps(record, ensure_ascii=False),
                format=fmt,
                prompt_tokens=prompt_len,
                completion_tokens=len(tokens) - prompt_len,
                total_tokens=len(tokens),
            )
        )
    return out, total


# ---- the longest prompt of a dataset, for the submit-time max_seq_length check -----------------------------
# Two passes. The first, over every row, is a cheap lower bound: the prompt turns' text encoded alone with
# tokenizer.json, without the chat template's markup. The second counts the prompt exactly as the engine does
# (samples.encode_with_spans with the tokenizer mlx_lm.utils.load gives the trainer) for the rows the first
# pass ranks highest, plus the highest of each prompt shape: the markup a template adds depends mostly on the
# shape (which roles come before the learned turn, tools or not; SmolLM2's adds a 20-token system turn when
# there is none), so a row of a rarer shape can outgrow rows with a larger bound.

EXACT_ROWS = 64  # top rows by lower bound counted exactly; ~1.4 ms each on a 2-core CPU (SmolLM2's template)
EXACT_SHAPES = 64  # at most this many shapes add their highest row beyond EXACT_ROWS


@dataclass(frozen=True)
class LongestPrompt:
    file: str  # the split file's name
    line: int
    tokens: int
    exact: (
        bool  # counted with the model's tokenizer and chat template, as the engine does; else a lower bound
    )


@dataclass(frozen=True)
class _Candidate:
    line: int
    bound: int
    record: dict[str, Any]


@dataclass(frozen=True)
class _Bounds:
    format: str  # the file's format (its first row's), as the engine detects it
    candidates: tuple[_Candidate, ...]  # highest bound first


def _file_version(file: Path) -> tuple[str, int, int]:
    stat = file.stat()
    return str(file), stat.st_mtime_ns, stat.st_size


def _model_version(model: Path) -> tuple[tuple[str, int], ...]:
    """What the tokenizer and chat template are read from, by mtime: a replaced file is a new version."""
    return tuple(
        sorted((p.name, p.stat().st_mtime_ns) for p in model.iterdir() if p.suffix in (".json", ".jinja"))
    )


def longest_prompt(
    data: Path, model: Path, mask: str | bool, columns: tuple[str, ...] = (), max_rows: int = 50_000
) -> LongestPrompt | None:
    """The dataset's longest prompt by a lower bound of its tokens: the text of the turns before the first
    learned one (mask "assistant"; before the last for "last_assistant"), each stripped and encoded alone with
    the model's tokenizer.json, without the chat template's markup. None when nothing can be said (mask
    "none", text records, no tokenizer.json, non-JSONL splits). Cached per file version: a submit pays it once
    per dataset. `columns`: the spec's (prompt, completion, messages, system) fields."""
    from services.common.datasets.samples import mask_mode

    mask = mask_mode(mask)
    if mask == "none" or not (model / "tokenizer.json").is_file():
        return None
    best: LongestPrompt | None = None
    for file in _split_files(data).values():
        if file.suffix != ".jsonl":
            continue
        found = _longest_prompt_in(
            *_file_version(file), str(model / "tokenizer.json"), mask, columns, max_rows
        )
        if found and (best is None or found.candidates[0].bound > best.tokens):
            top = found.candidates[0]
            best = LongestPrompt(file.name, top.line, top.bound, exact=False)
    return best


def exact_longest_prompt(
    data: Path, model: Path, mask: str | bool, columns: tuple[str, ...] = (), max_rows: int = 50_000
) -> LongestPrompt | None:
    """The dataset's longest prompt in tokens as the engine counts them (the chat-templated turns before the
    first learned token: samples.encode_with_spans under `mask`), over each split's rows that
    `longest_prompt`'s bound ranks highest (EXACT_ROWS, plus the highest of each prompt shape). None when it
    cannot be counted here (no bound, the tokenizer does not load, the template or a record fails): the
    trainer names such problems. Cached per (file version, model version, mask, columns)."""
    from services.common.datasets.samples import mask_mode

    mask = mask_mode(mask)
    if mask == "none" or not (model / "tokenizer.json").is_file():
        return None
    best: LongestPrompt | None = None
    version = _model_version(model)
    for file in _split_files(data).values():
        if file.suffix != ".jsonl":
            continue
        found = _exact_longest_in(*_file_version(file), str(model), version, mask, columns, max_rows)
        if found is None:
            return None  # one split not counted: the bound stands for the whole dataset
        if best is None or found[1] > best.tokens:
            best = LongestPrompt(file.name, found[0], found[1], exact=True)
    return best


@functools.lru_cache(maxsize=4)
def _fast_tokenizer(path: str) -> Any:
    import tokenizers

    try:
        return tokenizers.Tokenizer.from_file(path)
    except Exception:  # noqa: BLE001 - the Rust binding raises a bare Exception for a broken file
        return None  # not checked here; the trainer's tokenizer load names the problem


@functools.lru_cache(maxsize=64)
def _longest_prompt_in(
    file: str, _mtime: int, _size: int, tokenizer: str, mask: str, fields: tuple[str, ...], max_rows: int
) -> _Bounds | None:
    from services.common.datasets.layouts import Columns, normalize
    from services.common.datasets.samples import FORMATS
    from services.common.datasets.sources import parse_line
    from services.common.errors import DatasetError

    columns = Columns(*fields)
    records, parts, owners = [], [], []
    with open(file, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            if len(records) >= max_rows:
                break
            try:
                record = normalize(parse_line(text, file, number), columns, Path(file), number)
            except DatasetError:
                return None  # a broken line is the trainer's (and ValidateDataset's) to name
            texts = _prompt_texts(record, mask)
            records.append((number, record))
            parts.extend(texts)
            owners.extend([len(records) - 1] * len(texts))
    fast = _fast_tokenizer(tokenizer)
    if not parts or fast is None:
        return None
    counts = [0] * len(records)
    for owner, encoding in zip(owners, fast.encode_batch(parts, add_special_tokens=False), strict=True):
        counts[owner] += len(encoding.ids)
    ranked = sorted(range(len(records)), key=lambda i: -counts[i])
    chosen = ranked[:EXACT_ROWS]
    shapes = {_prompt_shape(records[i][1], mask) for i in chosen}
    for i in ranked[EXACT_ROWS:]:
        if len(chosen) >= EXACT_ROWS + EXACT_SHAPES:
            break
        shape = _prompt_shape(records[i][1], mask)
        if shape not in shapes:  # the highest row of a shape not among the top rows
            shapes.add(shape)
            chosen.append(i)
    first = records[0][1]
    fmt = next((name for name, keys in FORMATS.items() if all(k in first for k in keys)), "")
    return _Bounds(fmt, tuple(_Candidate(records[i][0], counts[i], records[i][1]) for i in chosen))


def _prompt_shape(record: dict[str, Any], mask: str) -> tuple:
    """What decides the markup a chat template adds around a prompt: the roles before the learned turn
    (every role for last_assistant: the turns between are prompt too), and whether tools are rendered."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        return ("completion",)
    roles = tuple(m.get("role") for m in messages if isinstance(m, dict))
    if mask == "assistant" and "assistant" in roles:
        roles = roles[: roles.index("assistant")]
    return roles, bool(record.get("tools"))


_ENGINE_TOKENIZER_LOCK = threading.Lock()


def _engine_tokenizer(model_dir: str, version: tuple) -> Any:
    # One at a time, as _tokenizer: concurrent first imports of transformers fail in gRPC threads.
    with _ENGINE_TOKENIZER_LOCK:
        return _load_engine_tokenizer(model_dir, version)


@functools.lru_cache(maxsize=4)
def _load_engine_tokenizer(model_dir: str, _version: tuple) -> Any:
    """The tokenizer the trainer trains with: what mlx_lm.utils.load returns (load_tokenizer with the config's
    eos ids; its chat template, or the model family's), so counts match the engine's. None when it does not
    load here: the trainer's own load names the problem."""
    try:
        from mlx_lm.utils import load_config, load_tokenizer

        path = Path(model_dir)
        tokenizer = load_tokenizer(path, eos_token_ids=load_config(path).get("eos_token_id"))
        freeze_long_lived(f"the engine tokenizer of {path.name}")
        return tokenizer
    except Exception as exc:  # noqa: BLE001 - any failure leaves the lower bound standing, never a refusal
        log.info(
            "prompt lengths counted by a lower bound: the tokenizer does not load (%s: %s)",
            type(exc).__name__,
            str(exc)[:200],
            extra={"model_dir": model_dir},
        )
        return None


_EXACT_LOCK = threading.Lock()  # a Rust tokenizer used from two threads at once can raise "Already borrowed"


@functools.lru_cache(maxsize=64)
def _exact_longest_in(
    file: str,
    mtime: int,
    size: int,
    model_dir: str,
    model_version: tuple,
    mask: str,
    fields: tuple[str, ...],
    max_rows: int,
) -> tuple[int, int] | None:
    from services.common.datasets.samples import check_record, encode_with_spans

    bounds = _longest_prompt_in(
        file, mtime, size, str(Path(model_dir) / "tokenizer.json"), mask, fields, max_rows
    )
    if bounds is None or not bounds.format:
        return None
    tokenizer = _engine_tokenizer(model_dir, model_version)
    if tokenizer is None:
        return None
    best: tuple[int, int] | None = None
    with _EXACT_LOCK:
        for candidate in bounds.candidates:
            try:
                check_record(candidate.record, bounds.format, Path(file), candidate.line)
                tokens, spans = encode_with_spans(candidate.record, bounds.format, tokenizer, mask)
            except Exception as exc:  # noqa: BLE001 - a record or template the engine fails on: it names it
                log.info(
                    "prompt lengths counted by a lower bound: %s:%d does not encode (%s: %s)",
                    Path(file).name,
                    candidate.line,
                    type(exc).__name__,
                    str(exc)[:200],
                    extra={"model_dir": model_dir},
                )
                return None
            prompt = spans[0][0] if spans else len(tokens)  # as samples.Sample.prompt_len
            # A tie names the first line, the one the engine would fail on.
            if best is None or (prompt, -candidate.line) > (best[1], -best[0]):
                best = (candidate.line, prompt)
    return best


def _prompt_texts(record: dict[str, Any], mask: str) -> list[str]:
    if isinstance(record.get("messages"), list):
        messages = [m for m in record["messages"] if isinstance(m, dict)]
        roles = [m.get("role") for m in messages]
        if "assistant" not in roles:
            return []
        end = (
            roles.index("assistant")
            if mask == "assistant"
            else len(roles) - 1 - roles[::-1].index("assistant")
        )
        return [str(m["content"]).strip() for m in messages[:end] if m.get("content")]
    if isinstance(record.get("prompt"), str) and "completion" in record:
        return [record["prompt"].strip()]
    return []  # text records learn from their first token
