"""Building and serving the comparator: `make_server(config)` for tests, `main()` for
`python -m services.comparator`."""

from __future__ import annotations

from peftlab.v1 import comparator_pb2_grpc

from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.logs import setup_logging
from services.comparator.config import ComparatorConfig, load
from services.comparator.servicer import ComparatorServicer

SERVICE_NAME = "peftlab.v1.Comparator"


def make_server(config: ComparatorConfig) -> GrpcServer:
    binding = ServiceBinding(
        SERVICE_NAME, comparator_pb2_grpc.add_ComparatorServicer_to_server, ComparatorServicer()
    )
    return build_server(config.address(), [binding], max_workers=config.max_workers)


def main() -> None:
    config = load()
    setup_logging("comparator", config.log_level, config.log_format)
    serve(make_server(config))
