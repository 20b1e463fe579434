"""Starting real peftlab servers inside a test (loopback, port 0) and small waiting helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.grpc_server import GrpcServer
from services.common.paths import models_dir

TIMEOUT = 30.0


def wait_for(
    predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return reply.status


def reflected_services(address: str, metadata: tuple = ()) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5, metadata=metadata
        )
        return sorted(s.name for reply in replies for s in reply.list_services_response.service)


@dataclass
class Running:
    """A started server plus its core object and a channel to it."""

    grpc_server: GrpcServer
    core: Any
    address: str
    channel: grpc.Channel = field(init=False)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address)

    def stop(self, grace: float = 2.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.channel.close()
        shutdown = getattr(self.core, "shutdown", None)
        if shutdown:
            shutdown()
        self.grpc_server.stop(grace)


def start_trainer(
    redis_url: str,
    prefix: str,
    data_root: Path,
    runs_root: Path,
    slots: int = 1,
    trainer_id: str = "",
    **overrides: Any,
) -> Running:
    from services.common.config import load_config
    from services.trainer.config import TrainerConfig
    from services.trainer.server import make_server, use_optimized_blas

    values = {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "port": 0,
        "slots": slots,
        "trainer_id": trainer_id,
        "models_root": models_dir(),
        "data_root": data_root,
        "runs_root": runs_root,
        "heartbeat_interval": 0.5,
        "heartbeat_ttl": 3.0,
        "shutdown_grace": 20.0,
    }
    config = load_config(TrainerConfig, env={}, **{**values, **overrides})
    use_optimized_blas()  # run processes inherit it: ~10x faster steps on a Linux CPU
    grpc_server, trainer = make_server(config)
    grpc_server.start()
    trainer.register()
    return Running(grpc_server, trainer, f"127.0.0.1:{grpc_server.port}")


def start_gateway(
    redis_url: str, prefix: str, data_root: Path, runs_root: Path, port: int = 0, **overrides: Any
) -> Running:
    from services.common.config import load_config
    from services.gateway.config import GatewayConfig
    from services.gateway.server import make_server

    values = {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "port": port,
        "models_root": models_dir(),
        "data_root": data_root,
        "runs_root": runs_root,
        "comparator_address": "127.0.0.1:1",
        "optimizer_address": "127.0.0.1:1",
        "placement_interval": 0.5,
    }
    config = load_config(GatewayConfig, env={}, **{**values, **overrides})
    grpc_server, gateway = make_server(config)
    grpc_server.start()
    gateway.start()
    return Running(grpc_server, gateway, f"127.0.0.1:{grpc_server.port}")


def start_optimizer() -> Running:
    """The optimizer on a loopback port (it keeps no state: no Redis)."""
    from services.optimizer.config import OptimizerConfig
    from services.optimizer.server import make_server

    grpc_server = make_server(OptimizerConfig(host="127.0.0.1", port=0))
    grpc_server.start()
    return Running(grpc_server, None, f"127.0.0.1:{grpc_server.port}")


def free_port() -> int:
    """A loopback port nobody listens on now (for a server the gateway must know before it starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_comparator(
    redis_url: str,
    redis_prefix: str,
    port: int,
    gateway_address: str,
    optimizer_address: str,
    experiments_root: Path,
    data_root: Path,
    **overrides: Any,
) -> Running:
    """The comparator on `port`, driving experiments (its core is started) through the given gateway."""
    from services.common.config import load_config
    from services.comparator.config import ComparatorConfig
    from services.comparator.server import make_server

    values = {
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "port": port,
        "gateway_address": gateway_address,
        "optimizer_address": optimizer_address,
        "experiments_root": experiments_root,
        "data_root": data_root,
        "poll_interval": 0.3,
        "lease_seconds": 3.0,
    }
    config = load_config(ComparatorConfig, env={}, **{**values, **overrides})
    grpc_server, comparator = make_server(config)
    grpc_server.start()
    comparator.start()
    return Running(grpc_server, comparator, f"127.0.0.1:{grpc_server.port}")
