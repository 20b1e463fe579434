"""Concurrent Suggest calls spread over worker processes give the very answers of the in-process path, and a
bad request from a worker keeps its status and field."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from service_helpers import wait_for

from services.common.errors import InvalidArgument
from services.optimizer import codec
from services.optimizer.servicer import SuggestPool
from services.optimizer.suggest import suggest


def _request(n_trials: int, seed: int):
    from bench.load import _suggest_request

    proto = _suggest_request(n_trials)
    proto.seed = seed
    return codec.suggest_request_from_proto(proto)


def test_concurrent_calls_in_workers_answer_like_the_server_process():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # as the server process runs (limit_blas_threads)
        _check_pool()


def _check_pool() -> None:
    pool = SuggestPool(processes=2, blas_threads=1)
    requests = [_request(24, seed) for seed in range(6)]
    expected = [suggest(r) for r in requests]
    pool.run(requests[0])  # starts the workers in the background
    answers: dict[int, object] = {}

    def call(i: int) -> None:
        answers[i] = pool.run(requests[i])

    def concurrently() -> list:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [answers[i] for i in range(len(requests))]

    assert concurrently() == expected  # workers still starting: the calls ran here
    wait_for(lambda: pool._ready, timeout=120, what="the Suggest workers to start")
    assert concurrently() == expected  # all but one went to the workers
    bad = dataclasses.replace(_request(24, 0), n=0)  # the core's own check (the codec lets 0 through)
    pool._in_flight = 1  # as if another call were running: this one goes to a worker
    with pytest.raises(InvalidArgument) as caught:
        pool.run(bad)
    assert caught.value.field == "n" and "got 0" in caught.value.message
    pool._in_flight = 0
    pool.shutdown()
