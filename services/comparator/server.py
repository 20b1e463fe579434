"""Building and serving the comparator: `make_server(config)` for tests (port 0 works), `main()` for
`python -m services.comparator`."""

from __future__ import annotations

import logging

from peftlab.v1 import comparator_pb2_grpc

from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.logs import setup_logging
from services.common.redis_store import RunStore

from .clients import GatewayRuns, OptimizerClient
from .config import ComparatorConfig, load
from .experiments import Comparator
from .servicer import ComparatorServicer
from .state import ExperimentStore

log = logging.getLogger(__name__)

SERVICE_NAME = "peftlab.v1.Comparator"


def make_comparator(config: ComparatorConfig) -> Comparator:
    runs = RunStore.from_url(config.redis_url, config.redis_prefix, config.events_maxlen)
    return Comparator(
        config,
        ExperimentStore(runs.r, config.redis_prefix),
        runs,
        GatewayRuns(config.gateway_address, config.call_timeout),
        OptimizerClient(config.optimizer_address, config.call_timeout),
    )


def make_server(config: ComparatorConfig) -> tuple[GrpcServer, Comparator]:
    """A bound, not yet started server and its core (call comparator.start() to start driving experiments)."""
    comparator = make_comparator(config)
    binding = ServiceBinding(
        SERVICE_NAME, comparator_pb2_grpc.add_ComparatorServicer_to_server, ComparatorServicer(comparator)
    )
    return build_server(
        config.address(),
        [binding],
        max_workers=config.max_workers,
        max_streams=config.max_streams,
        internal=True,
    ), comparator


def main() -> None:
    config = load()
    setup_logging("comparator", config.log_level, config.log_format)
    grpc_server, comparator = make_server(config)
    serve(grpc_server, after_start=comparator.start, before_stop=comparator.shutdown)
