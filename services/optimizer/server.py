"""Building and serving the optimizer: `make_server(config)` for tests (port 0 works), `main()` for
`python -m services.optimizer`."""

from __future__ import annotations

from peftlab.v1 import optimizer_pb2_grpc

from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.logs import setup_logging

from .config import OptimizerConfig, load
from .servicer import OptimizerServicer

SERVICE_NAME = "peftlab.v1.Optimizer"


def make_server(config: OptimizerConfig, servicer: OptimizerServicer | None = None) -> GrpcServer:
    """A bound, not yet started server (health + reflection + the shared interceptor); `.port` is its port."""
    binding = ServiceBinding(
        SERVICE_NAME,
        optimizer_pb2_grpc.add_OptimizerServicer_to_server,
        servicer or OptimizerServicer(config),
    )
    return build_server(config.address(), [binding], max_workers=config.max_workers, internal=True)


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS at `threads`: the GP's small matrices gain nothing from more, and on a loaded machine
    a multi-threaded BLAS spins against other processes (200-trial Suggest 4.4-7.4 s vs 0.46 s measured)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def main() -> None:
    config = load()
    setup_logging("optimizer", config.log_level, config.log_format)
    limit_blas_threads(config.blas_threads)
    servicer = OptimizerServicer(config)
    server = make_server(config, servicer)
    # The Suggest workers start before health says SERVING (a cold pool made the first burst of calls wait).
    servicer.pool.start(wait=60.0)
    serve(server, grace=config.shutdown_grace)
