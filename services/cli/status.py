"""`peftlab status` when the gateway does not answer: what the CLI can still see by itself. Redis (from the
same PEFTLAB_REDIS_URL / PEFTLAB_REDIS_PREFIX the services read), the trainers registered there and their
health, the optimizer and comparator at their configured addresses, and the runs by status; built as the
GetStatusResponse the gateway would have sent, so one printer shows both."""

from __future__ import annotations

import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from peftlab.v1 import gateway_pb2

from services.common import transport

SERVICES = (  # name, the env variable the gateway reads its address from, the default (ARCHITECTURE.md §6)
    ("optimizer", "PEFTLAB_OPTIMIZER_ADDRESS", "127.0.0.1:50053"),
    ("comparator", "PEFTLAB_COMPARATOR_ADDRESS", "127.0.0.1:50054"),
)


def health(address: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(serving, why not) of a gRPC server's standard health check."""
    with transport.channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, exc.code().name
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving, "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def direct_status(gateway_address: str, why: str) -> gateway_pb2.GetStatusResponse:
    """The system as seen without the gateway (which is reported down, with `why`)."""
    from services.common import codec
    from services.common.config import RedisConfig, load_config, peftlab_version
    from services.common.redis_store import RunStore

    out = gateway_pb2.GetStatusResponse(version=peftlab_version())
    out.services.add(name="gateway", address=gateway_address, healthy=False, detail=why)
    redis = load_config(RedisConfig)
    address = redis.redis_url.split("@")[-1]  # never print a password
    store = None
    try:
        store = RunStore.from_url(redis.redis_url, redis.redis_prefix)
        redis_ok = store.ping()
        detail = "" if redis_ok else "no PONG"
    except Exception as exc:  # a refused connection or a bad URL: reported, not raised
        redis_ok, detail = False, f"{type(exc).__name__}: {exc}"
    out.services.add(name="redis", address=address, healthy=redis_ok, detail=detail)
    for name, variable, default in SERVICES:
        where = os.environ.get(variable, "").strip() or default
        healthy, detail = health(where)
        out.services.add(name=name, address=where, healthy=healthy, detail=detail)
    if store is not None and redis_ok:
        for trainer in store.list_trainers():
            healthy, detail = health(trainer.address)
            out.services.add(
                name=f"trainer {trainer.id}", address=trainer.address, healthy=healthy, detail=detail
            )
            out.trainers.append(codec.trainer_to_proto(trainer))
        for status, count in store.count_by_status().items():
            out.runs.add(status=codec.STATUS_TO_PROTO[status], count=count)
    if store is not None:
        store.close()
    return out
