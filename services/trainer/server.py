"""Building and serving the trainer: `make_server(config)` for tests (port 0 works), `serve()` for
`python -m services.trainer`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from peftlab.v1 import trainer_pb2_grpc

from services.common.grpc_server import GrpcServer, ServiceBinding, build_server, serve
from services.common.logs import setup_logging
from services.common.redis_store import RunStore
from services.trainer.config import TrainerConfig, load
from services.trainer.registry import Identity
from services.trainer.servicer import TrainerServicer
from services.trainer.trainer import Trainer

log = logging.getLogger(__name__)

SERVICE_NAME = "peftlab.v1.Trainer"


def detect_hardware() -> dict:
    from services.trainer.engine.hardware import detect_hardware as detect

    return detect().to_dict()


def make_server(config: TrainerConfig, store: RunStore | None = None) -> tuple[GrpcServer, Trainer]:
    """A bound, not yet started server and its trainer core (call trainer.register() once it serves)."""
    store = store or RunStore.from_url(config.redis_url, config.redis_prefix, config.events_maxlen)
    grpc_server = build_server(
        config.address(), max_workers=config.max_workers, max_streams=config.max_streams, internal=True
    )
    # The trainer's registry id and address name its port, known only once bound.
    identity = Identity(
        trainer_id=config.resolved_id(grpc_server.port),
        address=config.advertised(grpc_server.port),
        hardware=detect_hardware(),
        probe_hardware=detect_hardware,
    )
    trainer = Trainer(config, store, identity)
    grpc_server.add(
        ServiceBinding(SERVICE_NAME, trainer_pb2_grpc.add_TrainerServicer_to_server, TrainerServicer(trainer))
    )
    return grpc_server, trainer


def use_optimized_blas() -> None:
    """Run processes inherit the environment: preload the optimized BLAS for them (ARCHITECTURE.md §4)."""
    from services.trainer.engine.blas import optimized_blas_path, preload_env

    path = optimized_blas_path()
    if path:
        os.environ.update(preload_env())
        log.info("run processes preload an optimized BLAS", extra={"blas": path})
    else:
        log.info("no optimized BLAS to preload (Metal/CUDA, or not installed)")


def main(config: TrainerConfig | None = None, announce: Callable[[Trainer], None] | None = None) -> None:
    """Serve until SIGTERM; `announce` runs once registered (`peftlab trainer join` prints its summary)."""
    config = config or load()
    setup_logging("trainer", config.log_level, config.log_format)
    use_optimized_blas()
    grpc_server, trainer = make_server(config)

    def registered() -> None:
        trainer.register()
        if announce:
            announce(trainer)

    serve(grpc_server, grace=config.shutdown_grace, after_start=registered, before_stop=trainer.shutdown)
