"""A model dir's config.json, read with a message a person can act on when it is broken (one broken dir must
not fail calls about the others). Used by the gateway's model list, its dataset preview and its submit checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition


def read_model_config(path: Path, field: str = "model") -> dict[str, Any]:
    """The parsed config.json of the model dir `path`; FailedPrecondition naming the file and the fault."""
    file = path / "config.json"
    where = f"{path.name}/config.json"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {where}: {exc.strerror}", field) from None
    except UnicodeDecodeError:
        raise FailedPrecondition(f"{where} is not UTF-8 text; fix or replace the model dir", field) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix or replace the model dir",
            field,
        ) from None
    except RecursionError:
        raise FailedPrecondition(f"{where} is nested too deeply to parse", field) from None
    if not isinstance(config, dict):
        raise FailedPrecondition(f"{where} must hold a JSON object, not {type(config).__name__}", field)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise FailedPrecondition(f"{where} has no 'model_type' (the architecture mlx_lm loads)", field)
    for key in ("num_hidden_layers", "hidden_size", "vocab_size"):
        if key in config and (not isinstance(config[key], int) or isinstance(config[key], bool)):
            raise FailedPrecondition(f"{where}: '{key}' must be an integer, got {config[key]!r:.40}", field)
    return config
