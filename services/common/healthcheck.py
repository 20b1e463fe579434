"""`python -m services.common.healthcheck HOST:PORT [SERVICE]`: exit 0 when a peftlab server's gRPC health
service says SERVING, else 1 with the reason. Container health checks (deploy/) run it; it needs no token
(health is never behind auth) and reads the same TLS settings as the services (PEFTLAB_TLS_CA)."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def channel_for(address: str) -> grpc.Channel:
    """TLS as the services use it (PEFTLAB_TLS_CA, and the client pair under mTLS), else plaintext."""
    from services.common import transport

    return transport.channel(address)


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """'' when SERVING, else what is wrong (a sentence)."""
    with channel_for(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"{address}: {exc.code().name} {exc.details() or ''}".strip()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("service", nargs="?", default="", help="a service name; default the whole server")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    problem = check(args.address, args.service, args.timeout)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
