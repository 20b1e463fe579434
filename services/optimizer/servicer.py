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

from peftlab.v1 import optimizer_pb2 as pb
from peftlab.v1 import optimizer_pb2_grpc

from services.common.errors import InvalidArgument, ServiceError, Unavailable, error_for_code

from . import codec
from .batch import recommend_batch_size
from .config import OptimizerConfig
from .rank import recommend_rank
from .schedules import default_space
from .suggest import suggest

log = logging.getLogger(__name__)


def _start_worker(blas_threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=blas_threads, user_api="blas")


def _suggest_in_worker(req):
    """Suggest in a worker; a domain error comes back as data (its class need not survive pickling)."""
    try:
        return "ok", suggest(req)
    except ServiceError as exc:
        return "error", (exc.code, exc.message, exc.field)


class SuggestPool:
    """Concurrent Suggest calls spread over worker processes: the GP is Python-heavy, so threads of one
    process queue on its interpreter lock (8 callers of a 200-trial Suggest waited ~8x one call). A call with
    none other in flight runs here, as before; the others go to the workers once they are up (spawned in the
    background on the first call, so no call waits for them). Same function, same inputs, BLAS on the same
    thread count: the same answers."""

    def __init__(self, processes: int, blas_threads: int):
        self.processes = processes
        self.blas_threads = blas_threads
        self._pool: ProcessPoolExecutor | None = None
        self._ready = False
        self._in_flight = 0
        self._lock = threading.Lock()

    def run(self, req):
        with self._lock:
            busy = self._in_flight > 0
            self._in_flight += 1
            if self._pool is None and self.processes > 1:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.blas_threads,),
                )
                self._ready = False
                warm = [self._pool.submit(_start_worker, self.blas_threads) for _ in range(self.processes)]
                for future in warm:
                    future.add_done_callback(self._warmed)
            pool = self._pool if busy and self._ready else None
        try:
            return suggest(req) if pool is None else self._in_worker(pool, req)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _warmed(self, future) -> None:
        if future.exception() is None:
            self._ready = True

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
