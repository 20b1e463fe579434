"""The Optimizer gRPC servicer: decode the request, call the pure core, encode the answer.

Domain errors (services/common/errors.py) propagate to the shared interceptor, which maps each to its one
status code (bad requests are INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from peftlab.v1 import optimizer_pb2 as pb
from peftlab.v1 import optimizer_pb2_grpc

from services.common.errors import InvalidArgument, ServiceError, Unavailable, error_for_code

from . import codec
from .batch import recommend_batch_size
from .config import OptimizerConfig
from .rank import recommend_rank
from .schedules import default_space
from .space import Parameter, SearchSpace
from .suggest import SuggestRequest, suggest
from .trials import Trial

log = logging.getLogger(__name__)

WORKER_START_S = 120.0


def _start_worker(blas_threads: int, started) -> None:
    """A worker's first steps: BLAS on `blas_threads`, then one suggestion through the GP path, so the first
    real call does not pay for lazy imports and first-use setup (0.1-0.3 s measured); then it says so."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=blas_threads, user_api="blas")
    suggest(_warmup_request())
    started.release()


def _warmup_request() -> SuggestRequest:
    """A LoRA-like space with 200 made-up trials: the size a long study sends."""
    space = SearchSpace(
        (
            Parameter.real("lr", 1e-5, 1e-2, log=True),
            Parameter.integer("rank", 2, 64, log=True),
            Parameter.real("dropout", 0.0, 0.3),
            Parameter.categorical("method", ("lora", "dora")),
        )
    )
    rng = np.random.default_rng(0)
    trials = [
        Trial(
            {
                "lr": float(10 ** rng.uniform(-5, -2)),
                "rank": int(rng.integers(2, 65)),
                "dropout": float(rng.uniform(0, 0.3)),
                "method": ("lora", "dora")[i % 2],
            },
            values={"valid_loss": float(rng.uniform(1, 3))},
        )
        for i in range(200)
    ]
    return SuggestRequest(space=space, trials=trials)


def _noop() -> None:
    pass


def _suggest_in_worker(req):
    """Suggest in a worker; a domain error comes back as data (its class need not survive pickling)."""
    try:
        return "ok", suggest(req)
    except ServiceError as exc:
        return "error", (exc.code, exc.message, exc.field)


class SuggestPool:
    """Concurrent Suggest calls spread over worker processes: the GP is Python-heavy, so threads of one
    process queue on its interpreter lock (8 callers of a 200-trial Suggest waited ~8x one call). A call with
    none other in flight runs here; the others go to the workers once they are up (`start`: the server spawns
    them before it reports SERVING; a pool made without it spawns them in the background on its first call, so
    no call waits for them). Same function, same inputs, BLAS on the same
    thread count: the same answers."""

    def __init__(self, processes: int, blas_threads: int):
        self.processes = processes
        self.blas_threads = blas_threads
        self._pool: ProcessPoolExecutor | None = None
        self._ready = False
        self._in_flight = 0
        self._lock = threading.Lock()

    def start(self, wait: float | None = None) -> None:
        """Spawn the workers (each warms up in its initializer); with `wait`, also warm up this process and
        block until every worker is ready or `wait` seconds passed. The server calls this before it reports
        SERVING, so no caller meets a cold pool: a first burst of 8 calls otherwise ran in this process, one
        at a time on its interpreter lock, while the workers were still importing (bench/load.py: p99 1.3 s
        against 0.4 s warm)."""
        with self._lock:
            if self._pool is not None or self.processes <= 1:
                return
            context = multiprocessing.get_context("spawn")
            started = context.Semaphore(0)
            pool = self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self.blas_threads, started),
            )
            self._ready = False
            for _ in range(self.processes):  # the pool spawns a worker per task while none is idle
                pool.submit(_noop)

        def await_workers() -> None:
            for _ in range(self.processes):
                if not started.acquire(timeout=WORKER_START_S):
                    log.warning("a Suggest worker did not start", extra={"seconds": WORKER_START_S})
                    return
            with self._lock:
                self._ready = self._pool is pool

        waiter = threading.Thread(target=await_workers, name="suggest-workers", daemon=True)
        waiter.start()
        if wait is not None:
            suggest(_warmup_request())
            waiter.join(wait)

    def run(self, req):
        self.start()
        with self._lock:
            busy = self._in_flight > 0
            self._in_flight += 1
            pool = self._pool if busy and self._ready else None
        try:
            return suggest(req) if pool is None else self._in_worker(pool, req)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _in_worker(self, pool: ProcessPoolExecutor, req):
        try:
            kind, value = pool.submit(_suggest_in_worker, req).result()
        except BrokenProcessPool:  # a worker died (killed, out of memory): the next call gets a fresh pool
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise Unavailable("the optimizer's worker process died; retry") from None
        if kind == "error":
            raise error_for_code(*value)
        return value

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServicer):
    def __init__(self, config: OptimizerConfig):
        self.max_trials = config.max_trials
        processes = config.suggest_processes or min(4, os.cpu_count() or 1)
        self.pool = SuggestPool(processes, config.blas_threads)

    def Suggest(self, request: pb.SuggestRequest, context) -> pb.SuggestResponse:
        if len(request.trials) > self.max_trials:
            raise InvalidArgument(
                f"{len(request.trials)} trials; this server accepts at most {self.max_trials} per request",
                field="trials",
            )
        result = self.pool.run(codec.suggest_request_from_proto(request))
        sources = ",".join(sorted({s.source for s in result.suggestions}))
        log.info(
            "suggested",
            extra={"trials": len(request.trials), "n": len(result.suggestions), "source": sources},
        )
        return codec.suggest_response(result)

    def RecommendRank(self, request: pb.RecommendRankRequest, context) -> pb.RecommendRankResponse:
        return codec.rank_response(recommend_rank(codec.rank_request_from_proto(request)))

    def RecommendBatchSize(
        self, request: pb.RecommendBatchSizeRequest, context
    ) -> pb.RecommendBatchSizeResponse:
        return codec.batch_response(recommend_batch_size(codec.batch_request_from_proto(request)))

    def GetDefaultSpace(self, request: pb.GetDefaultSpaceRequest, context) -> pb.GetDefaultSpaceResponse:
        space, schedules = default_space(tuple(request.methods), request.total_steps or 200)
        return codec.default_space_response(space, schedules)
