"""The bad-input corpus (tests/reliability/corpus/*.yaml): loading its cases, turning one into a request of
its RPC, calling the gateway with it, and snapshotting what a rejected request must leave unchanged.

A corpus file holds `cases:` (and optionally `base_spec:`, merged under a case's `spec:` into
`request.spec`). A case names the Gateway `rpc`, its `request` as protobuf JSON, the expected status `code`,
a substring of the `message` (for code OK: of the response as JSON), optionally the `field` the status'
trailer must name, and `metadata` to send instead of the bearer token. Strings may hold placeholders:
`$RUN_<STATUS>` (the stack's runs), `$DATA_ROOT`, `$MODELS_ROOT`, `$RUNS_ROOT`, `$OUTSIDE` (absolute paths),
`$REPEAT:<text>:<n>` (text n times), `$B64:<text>` (base64, for bytes fields). `raw` (hex) sends those bytes
as the request instead of a message."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import peftlab.v1.gateway_pb2  # noqa: F401 - registers the Gateway's descriptors
import redis
import yaml
from google.protobuf import descriptor_pool, json_format, message_factory

CORPUS = Path(__file__).parent / "corpus"
SERVICE = "peftlab.v1.Gateway"


@dataclass
class Case:
    source: str
    rpc: str
    code: str
    message: str
    request: dict[str, Any] = field(default_factory=dict)
    field: str | None = None
    metadata: dict[str, str] | None = None
    raw: str = ""

    @property
    def id(self) -> str:
        return f"{self.source}-{self.rpc}"


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        text = yaml.safe_load(path.read_text())
        base_spec = text.get("base_spec") or {}
        for i, item in enumerate(text["cases"]):
            item = dict(item)
            spec = item.pop("spec", None)
            if spec is not None:
                item.setdefault("request", {})["spec"] = {**base_spec, **spec}
            cases.append(Case(source=f"{path.stem}:{i + 1}", **item))
    return cases


def method(rpc: str):
    return descriptor_pool.Default().FindServiceByName(SERVICE).methods_by_name[rpc]


def expand(value: Any, stack: Any) -> Any:
    if isinstance(value, dict):
        return {expand(k, stack): expand(v, stack) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, stack) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("$B64:"):
        return base64.b64encode(expand(value[5:], stack).encode()).decode()
    value = re.sub(r"\$REPEAT:(.*?):(\d+)", lambda m: m.group(1) * int(m.group(2)), value)
    value = re.sub(r"\$RUN_([A-Z]+)", lambda m: stack.runs[m.group(1)], value)
    roots = stack.roots
    places = {"DATA_ROOT": roots.data, "MODELS_ROOT": roots.models, "RUNS_ROOT": roots.runs}
    places["OUTSIDE"] = roots.outside
    return re.sub(r"\$([A-Z_]+_ROOT|OUTSIDE)", lambda m: str(places[m.group(1)]), value)


def request_of(case: Case, stack: Any):
    descriptor = method(case.rpc)
    request_type = message_factory.GetMessageClass(descriptor.input_type)
    return json_format.ParseDict(expand(case.request, stack), request_type())


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    field: str
    response: str  # the (last) response as JSON when the call succeeded


def call(case: Case, stack: Any, timeout: float = 30.0) -> Outcome:
    """Call the stack's gateway with the case's request; never raises for a status."""
    from services.common.metadata import FIELD_KEY

    descriptor = method(case.rpc)
    path = f"/{SERVICE}/{case.rpc}"
    response_type = message_factory.GetMessageClass(descriptor.output_type)
    if case.raw:
        payload, serialize = bytes.fromhex(case.raw), None
    else:
        payload, serialize = request_of(case, stack), (lambda m: m.SerializeToString())
    metadata = tuple(case.metadata.items()) if case.metadata is not None else stack.auth
    channel = stack.gateway.channel
    kind = channel.unary_stream if descriptor.server_streaming else channel.unary_unary
    rpc = kind(path, request_serializer=serialize, response_deserializer=response_type.FromString)
    try:
        reply = rpc(payload, timeout=timeout, metadata=metadata)
        if descriptor.server_streaming:
            replies = list(reply)
            reply = replies[-1] if replies else response_type()
        return Outcome(grpc.StatusCode.OK, "", "", json_format.MessageToJson(reply))
    except grpc.RpcError as exc:
        trailers = dict(exc.trailing_metadata() or ())
        return Outcome(exc.code(), exc.details() or "", trailers.get(FIELD_KEY, ""), "")


# ---- what a rejected request must not touch ----

# Trainer registry entries carry the heartbeat: their values change every half second by design.
_LIVE = re.compile(r"trainer:[^:]+$")


def redis_state(stack: Any) -> dict[str, Any]:
    """Every key under the stack's prefix with its value (hashes, streams by length and last id, sets...)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        for key in sorted(client.scan_iter(match=f"{stack.prefix}*", count=1000)):
            kind = client.type(key)
            if _LIVE.search(key):
                out[key] = kind
            elif kind == "hash":
                out[key] = client.hgetall(key)
            elif kind == "stream":
                info = client.xinfo_stream(key)
                out[key] = (info["length"], info["last-generated-id"])
            elif kind == "zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                out[key] = sorted(client.smembers(key))
            elif kind == "list":
                out[key] = client.lrange(key, 0, -1)
            else:
                out[key] = client.get(key) if kind == "string" else kind
        return out
    finally:
        client.close()


def files_state(stack: Any) -> dict[str, tuple]:
    """Every path under the stack's roots with its size and modification time (links as their target)."""
    out = {}
    roots = stack.roots
    for root in (roots.models, roots.data, roots.runs, roots.experiments, roots.outside):
        paths = [Path(root)] if Path(root).exists() else []
        for base, dirs, files in os.walk(root):
            paths += [Path(base) / name for name in dirs + files]
        for path in paths:
            # A dir by its entries (those are listed themselves), not its mtime: a refused upload may use and
            # remove a scratch dir, as long as nothing is left behind.
            stat = path.lstat()
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                out[str(path)] = ("dir",)
            else:
                out[str(path)] = ("file", stat.st_size, stat.st_mtime_ns)
    return out
