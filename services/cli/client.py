"""The CLI's console and the spec files its commands read; shared by main.py and experiments.py so neither
imports the other. The connection to the gateway is the Python client's (services/client)."""

from __future__ import annotations

import difflib
from pathlib import Path

RECONNECT_SECONDS = 60.0
PIPE_WIDTH = 10_000  # columns when stdout is not a terminal: wide enough that no table is cut


def make_console(stderr: bool = False):
    """Rich output. Into a pipe or a file (no terminal) nothing is cut to 80 columns: lines are as long as
    their content, so `peftlab run list | grep` sees whole ids and names."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=width is not None)


# ---- run spec files ---------------------------------------------------------------------------------------


def load_spec(path: Path):
    """A YAML file of RunSpec fields (the same file `peftlab train --config` takes) as a RunSpec message;
    only the fields it sets are sent (the rest take their defaults). Unknown fields fail here, with a hint."""
    import yaml
    from peftlab.v1 import common_pb2

    from services.common.codec import fill

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"error: {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise SystemExit(f"error: {path}: expected a mapping of RunSpec field: value")
    known = list(common_pb2.RunSpec.DESCRIPTOR.fields_by_name)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise SystemExit(
                f"error: {path}: unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    for listed in ("target_modules", "report_to"):
        if isinstance(values.get(listed), str):
            values[listed] = [m.strip() for m in values[listed].split(",") if m.strip()]
    try:
        return fill(common_pb2.RunSpec(), values)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {path}: {exc}") from None
