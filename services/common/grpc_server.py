"""Building and serving a peftlab gRPC server: health checking, reflection, the interceptors, and a
graceful stop on SIGTERM. Building and serving are separate (grpc examples' create_server / serve), so tests
build a server on port 0 and talk to the real thing."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptors import ServiceInterceptor

log = logging.getLogger(__name__)


@dataclass
class ServiceBinding:
    """One servicer to add: its full proto name (e.g. "peftlab.v1.Trainer"), the generated add_*_to_server
    function, and the servicer instance."""

    name: str
    add: Callable[[Any, grpc.Server], None]
    servicer: Any


@dataclass
class GrpcServer:
    """A bound server. Add servicers with `add` (possibly after reading `port`), then `start`."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    names: list[str] = field(default_factory=list)

    def add(self, binding: ServiceBinding) -> None:
        binding.add(binding.servicer, self.server)
        self.names.append(binding.name)
        self.health.set(binding.name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def start(self) -> None:
        reflection.enable_server_reflection(
            [*self.names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.server.start()
        for name in ["", *self.names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, let running ones finish for up to `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def build_server(
    address: str,
    bindings: Sequence[ServiceBinding] = (),
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    max_workers: int = 32,
) -> GrpcServer:
    """A server with health + reflection + the error/logging interceptor, bound to `address` (port 0 = any)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ServiceInterceptor(), *interceptors],
        # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind and share it silently.
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients (the gateway's channels) ping every 30 s; gRPC's default server policy (one ping per 5 min
            # without data) answers that with GOAWAY "too_many_pings", cutting long streams such as a forwarded
            # WatchExperiment.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address} (port in use?)")
    grpc_server = GrpcServer(server=server, port=port, health=health_servicer)
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
    log.info("serving", extra={"port": grpc_server.port, "services": ",".join(grpc_server.names)})
    while not stop.wait(1.0):
        pass
    grpc_server.health.enter_graceful_shutdown()
    if before_stop:
        before_stop()
    grpc_server.server.stop(grace).wait()
    log.info("stopped")
