"""Building and serving a peftlab gRPC server: health checking, reflection, the interceptors, optional TLS,
and a graceful stop on SIGTERM. Building and serving are separate (grpc examples' create_server / serve), so
tests build a server on port 0 and talk to the real thing.

Every server is a grpc.aio server on its own event-loop thread. Handlers written as plain functions run in a
bounded thread pool (grpc.aio's migration pool); the long-lived waits (WatchRun, WatchExperiment, health) are
coroutines that cost no thread while they wait, so open streams cannot starve unary calls or health. This is
grpc's own recommendation for streaming-heavy servers (one thread per stream is the sync server's limit).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import transport
from services.common.heap import freeze_long_lived
from services.common.interceptors import ServiceInterceptor, ServiceTokenInterceptor, StreamLimit
from services.common.watch import close_clients

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPTIONS = [
    # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind and share it silently.
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Clients (the gateway's channels) ping every 30 s; gRPC's default server policy (one ping per 5 min
    # without data) answers that with GOAWAY "too_many_pings", cutting long streams such as a forwarded
    # WatchExperiment.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class ServiceBinding:
    """One servicer to add: its full proto name (e.g. "peftlab.v1.Trainer"), the generated add_*_to_server
    function, and the servicer instance."""

    name: str
    add: Callable[[Any, Any], None]
    servicer: Any


class _LoopThread:
    """An asyncio loop on a daemon thread; `run` executes a coroutine there and waits for its result."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        async def cancel_tasks() -> None:  # e.g. a watch hub's XREAD: end it before the loop goes
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_clients(asyncio.get_running_loop())

        if self.thread.is_alive():
            self.run(cancel_tasks(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class GrpcServer:
    """A bound server. Add servicers with `add` (possibly after reading `port`), then `start`."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    loop: _LoopThread
    pool: futures.ThreadPoolExecutor
    streams: StreamLimit
    names: list[str] = field(default_factory=list)
    stopped: bool = False

    def add(self, binding: ServiceBinding) -> None:
        self.loop.call(lambda: binding.add(binding.servicer, self.server))
        self.names.append(binding.name)
        self.set_status(binding.name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def set_status(self, name: str, status: int) -> None:
        self.loop.run(self.health.set(name, status))

    def start(self) -> None:
        self.loop.call(
            lambda: reflection.enable_server_reflection(
                [*self.names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
            )
        )
        self.loop.run(self.server.start())
        for name in ["", *self.names]:
            self.set_status(name, health_pb2.HealthCheckResponse.SERVING)

    def enter_graceful_shutdown(self) -> None:
        self.loop.run(self.health.enter_graceful_shutdown())

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, let running ones finish for up to `grace` seconds."""
        if self.stopped:
            return
        self.stopped = True
        self.enter_graceful_shutdown()
        self.loop.run(self.server.stop(grace))
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.loop.close()


def build_server(
    address: str,
    bindings: Sequence[ServiceBinding] = (),
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_workers: int = 32,
    max_streams: int = 2000,
    internal: bool = False,
) -> GrpcServer:
    """A server with health + reflection + the error/logging interceptor, bound to `address` (port 0 = any).

    `max_workers` threads run the plain (non-coroutine) handlers; at most `max_streams` server streams are
    open at once, the next gets RESOURCE_EXHAUSTED (a bound on memory and Redis connections, not threads).
    TLS when PEFTLAB_TLS_CERT and PEFTLAB_TLS_KEY are set (transport.py). An `internal` server (trainer,
    optimizer, comparator) requires the service token of its callers once one is configured.
    """
    interceptors = list(interceptors)
    if internal:
        token = transport.service_token()
        if token:
            interceptors.insert(0, ServiceTokenInterceptor(token))
        else:
            log.warning(
                "no service token set: this internal service answers anyone (set PEFTLAB_SERVICE_TOKEN)"
            )
    loop = _LoopThread(f"grpc-{address}")
    pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")

    streams = StreamLimit(max_streams)

    async def create() -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
        server = grpc.aio.server(
            migration_thread_pool=pool,
            interceptors=[ServiceInterceptor(streams), *interceptors],
            options=_OPTIONS,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        return server, health_servicer

    server, health_servicer = loop.run(create())
    credentials = transport.server_credentials()

    def bind() -> int:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)

    try:
        port = loop.call(bind)
    except RuntimeError as exc:
        loop.close()
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        loop.close()
        raise OSError(f"cannot listen on {address} (port in use?)")
    grpc_server = GrpcServer(
        server=server, port=port, health=health_servicer, loop=loop, pool=pool, streams=streams
    )
    for binding in bindings:
        grpc_server.add(binding)
    return grpc_server


def serve(
    grpc_server: GrpcServer,
    *,
    grace: float = 10.0,
    before_stop: Callable[[], None] | None = None,
    after_start: Callable[[], None] | None = None,
) -> None:
    """Start, then block until SIGTERM or SIGINT; then stop gracefully (before_stop runs first, e.g. to
    checkpoint running work while health already says NOT_SERVING)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    grpc_server.start()
    if after_start:
        try:
            after_start()
        except BaseException:
            grpc_server.stop(0)  # don't linger half-started (e.g. Redis unreachable)
            raise
    freeze_long_lived("start")
    log.info("serving", extra={"port": grpc_server.port, "services": ",".join(grpc_server.names)})
    while not stop.wait(1.0):
        pass
    grpc_server.enter_graceful_shutdown()
    if before_stop:
        before_stop()
    grpc_server.stop(grace)
    log.info("stopped")
