"""The gateway's gRPC clients for trainers (one cached channel per address), the comparator and the optimizer."""

from __future__ import annotations

import threading

import grpc
from peftlab.v1 import comparator_pb2_grpc, optimizer_pb2_grpc, trainer_pb2, trainer_pb2_grpc

from services.common import codec, transport
from services.common.errors import Unavailable
from services.common.interceptors import outgoing_metadata
from services.common.metadata import FIELD_KEY
from services.common.records import RunRecord, TrainerRecord
from services.gateway.placement import DispatchError

# A trainer that cannot take a run *now* (retry later, elsewhere), as opposed to one that refuses the run.
RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 30000), ("grpc.enable_retries", 1)]


class Channels:
    """One channel per address, created on first use and kept (channels reconnect by themselves)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = transport.channel(address, CHANNEL_OPTIONS)
            return channel

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


class TrainerClients:
    def __init__(self, channels: Channels, timeout: float):
        self.channels = channels
        self.timeout = timeout

    def stub(self, address: str) -> trainer_pb2_grpc.TrainerStub:
        return trainer_pb2_grpc.TrainerStub(self.channels.get(address))

    def dispatch(self, record: RunRecord, trainer: TrainerRecord) -> None:
        """Have `trainer` start (or resume) a run the placer booked on it."""
        stub = self.stub(trainer.address)
        try:
            if record.status == "RESUMING":
                stub.ResumeRun(
                    trainer_pb2.ResumeRunRequest(run_id=record.id),
                    timeout=self.timeout,
                    metadata=outgoing_metadata(),
                )
            else:
                request = trainer_pb2.StartRunRequest(
                    run_id=record.id,
                    spec=codec.spec_to_proto(record.spec),
                    name=record.name,
                    experiment_id=record.experiment_id,
                    labels=record.labels,
                )
                stub.StartRun(request, timeout=self.timeout, metadata=outgoing_metadata())
        except grpc.RpcError as exc:
            field = dict(exc.trailing_metadata() or ()).get(FIELD_KEY, "")
            raise DispatchError(
                exc.code().name, exc.details() or exc.code().name, exc.code() in RETRY_CODES, field
            ) from None

    def cancel(self, address: str, run_id: str, reason: str) -> None:
        """Ask a trainer to stop a run; Unavailable when it cannot be reached (other errors keep their code)."""
        try:
            self.stub(address).CancelRun(
                trainer_pb2.CancelRunRequest(run_id=run_id, reason=reason),
                timeout=self.timeout,
                metadata=outgoing_metadata(),
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(f"trainer at {address} unreachable: {exc.code().name}") from None
            raise


def comparator_stub(channels: Channels, address: str) -> comparator_pb2_grpc.ComparatorStub:
    return comparator_pb2_grpc.ComparatorStub(channels.get(address))


def optimizer_stub(channels: Channels, address: str) -> optimizer_pb2_grpc.OptimizerStub:
    return optimizer_pb2_grpc.OptimizerStub(channels.get(address))
