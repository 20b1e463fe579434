"""Service configuration from `PEFTLAB_*` environment variables, read into one dataclass per service.

Each field's env name is `PEFTLAB_<FIELD>` unless its metadata names another (`env_field(..., env=...)`),
and its type (str, int, float, bool, Path) says how the value is parsed; a bad value names the variable.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def env_field(default: Any, help: str, env: str = "") -> Any:
    """A config field with its documentation and, optionally, its own env variable name."""
    return field(default=default, metadata={"help": help, "env": env})


def env_name(f: dataclasses.Field) -> str:
    return f.metadata.get("env") or f"PEFTLAB_{f.name.upper()}"


def _parse(name: str, kind: Any, text: str) -> Any:
    try:
        if kind is bool:
            if text.strip().lower() in _TRUE:
                return True
            if text.strip().lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is Path:
            return Path(text).expanduser()
        return text
    except ValueError:
        raise ValueError(f"{name}: cannot parse {text!r} as {getattr(kind, '__name__', kind)}") from None


def load_config(cls: type[T], env: dict[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from defaults, then the environment, then keyword overrides (tests pass these)."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = env_name(f)
        if name in env:
            kind = hints[f.name]
            if typing.get_origin(kind) is typing.Union or isinstance(kind, type(int | None)):
                kind = next(a for a in typing.get_args(kind) if a is not type(None))
            values[f.name] = _parse(name, kind, env[name])
    values.update(overrides)
    return cls(**values)


def peftlab_version() -> str:
    try:
        return importlib.metadata.version("peftlab")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class RedisConfig:
    """The Redis connection every service shares (ARCHITECTURE.md §3)."""

    redis_url: str = env_field(
        "redis://127.0.0.1:6390/0", "Redis URL; default is the embedded server of `make run`."
    )
    redis_prefix: str = env_field(
        "peftlab:", "Prefix of every key, so several deployments can share a Redis."
    )
    events_maxlen: int = env_field(10000, "Events kept per run stream (XADD MAXLEN ~).")
