"""Building and serving the gateway: `make_server(config)` for tests (port 0 works), `main()` for
`python -m services.gateway`."""

from __future__ import annotations

import logging

from peftlab.v1 import gateway_pb2_grpc

from services.common import transport
from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.interceptors import BearerTokenInterceptor
from services.common.logs import setup_logging
from services.common.redis_store import RunStore
from services.gateway.config import GatewayConfig, load
from services.gateway.gateway import Gateway
from services.gateway.servicer import GatewayServicer
from services.gateway.trainers import Channels, TrainerClients

log = logging.getLogger(__name__)

SERVICE_NAME = "peftlab.v1.Gateway"


def make_server(config: GatewayConfig, store: RunStore | None = None) -> tuple[GrpcServer, Gateway]:
    """A bound, not yet started server and its core (call gateway.start() to start placing runs)."""
    store = store or RunStore.from_url(config.redis_url, config.redis_prefix, config.events_maxlen)
    channels = Channels()
    gateway = Gateway(config, store, TrainerClients(channels, config.trainer_timeout))
    interceptors = [BearerTokenInterceptor(gateway.users)] if gateway.users.enabled else []
    grpc_server = build_server(
        config.address(),
        [
            ServiceBinding(
                SERVICE_NAME,
                gateway_pb2_grpc.add_GatewayServicer_to_server,
                GatewayServicer(gateway, channels),
            )
        ],
        interceptors=interceptors,
        max_workers=config.max_workers,
        max_streams=config.max_streams,
    )
    return grpc_server, gateway


def main() -> None:
    config = load()
    setup_logging("gateway", config.log_level, config.log_format)
    grpc_server, gateway = make_server(config)
    if gateway.users.enabled:
        log.info("bearer-token auth is on")
        if not transport.service_token():
            log.warning(
                "no service token set (PEFTLAB_SERVICE_TOKEN): the comparator cannot submit experiments' "
                "runs on a user's behalf, so experiments will fail"
            )
    serve(grpc_server, after_start=gateway.start, before_stop=gateway.shutdown)
