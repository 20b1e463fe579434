"""The CLI's connection to the gateway (a stub with the token and deadlines), its console, and the spec files
its commands read; shared by main.py and experiments.py so neither imports the other."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECONNECT_SECONDS = 60.0


# ---- the gateway client ---------------------------------------------------------------------------------


class Client:
    """Thin wrapper over the gateway stub: every call carries the token and a deadline."""

    def __init__(self, address: str, token: str, timeout: float = 30.0):
        import grpc
        from peftlab.v1 import gateway_pb2_grpc

        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=self.metadata)

    def stream(self, method: str, request: Any, timeout: float = 7 * 24 * 3600.0) -> Iterator[Any]:
        return getattr(self.stub, method)(request, timeout=timeout, metadata=self.metadata)


def make_console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


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
