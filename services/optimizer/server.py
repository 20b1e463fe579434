"""Building and serving the optimizer: `make_server(config)` for tests (port 0 works), `main()` for
`python -m services.optimizer`."""

from __future__ import annotations

from peftlab.v1 import optimizer_pb2_grpc

from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.logs import setup_logging

from .config import OptimizerConfig, load
from .servicer import OptimizerServicer

SERVICE_NAME = "peftlab.v1.Optimizer"


def make_server(config: OptimizerConfig) -> GrpcServer:
    """A bound, not yet started server (health + reflection + the shared interceptor); `.port` is its port."""
    binding = ServiceBinding(
        SERVICE_NAME, optimizer_pb2_grpc.add_OptimizerServicer_to_server, OptimizerServicer(config)
    )
    return build_server(config.address(), [binding], max_workers=config.max_workers, internal=True)


def main() -> None:
    config = load()
    setup_logging("optimizer", config.log_level, config.log_format)
    serve(make_server(config), grace=config.shutdown_grace)
