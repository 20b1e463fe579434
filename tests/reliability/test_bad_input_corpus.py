"""Every case of the bad-input corpus (tests/reliability/corpus/*.yaml) against a real stack: the gateway
answers with the case's status code and a message a person can act on (the field it names, a substring of
its text), never UNKNOWN or INTERNAL, and Redis and the roots are exactly as they were before the call."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from corpus_cases import SERVICE, call, files_state, load_cases, method, redis_state

CASES = load_cases()


def test_the_corpus_is_big_and_covers_every_public_rpc():
    from google.protobuf import descriptor_pool

    assert len(CASES) >= 150, len(CASES)
    rpcs = {m.name for m in descriptor_pool.Default().FindServiceByName(SERVICE).methods}
    assert rpcs - {c.rpc for c in CASES} == set()
    for case in CASES:
        method(case.rpc)  # every case names a real RPC
        assert case.code in grpc.StatusCode.__members__ and case.code not in ("UNKNOWN", "INTERNAL"), case.id
    print("corpus by code:", dict(Counter(c.code for c in CASES).most_common()))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, input_stack):
    input_stack.finished()
    before_redis, before_files = redis_state(input_stack), files_state(input_stack)
    outcome = call(case, input_stack)
    assert outcome.code.name == case.code, f"{case.id}: {outcome.code.name} {outcome.details!r}"
    if case.code == "OK":
        assert case.message in outcome.response, outcome.response
    else:
        assert case.message in outcome.details, outcome.details
        assert len(outcome.details) <= 1100, len(outcome.details)
    if case.field is not None:
        assert outcome.field == case.field, (outcome.field, outcome.details)
    assert _changes(before_redis, redis_state(input_stack)) == [], "the request changed Redis"
    assert _changes(before_files, files_state(input_stack)) == [], "the request changed files under the roots"


def _changes(before: dict, after: dict) -> list[str]:
    return [key for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
