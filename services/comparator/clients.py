"""The comparator's gRPC clients: the gateway (submit and cancel runs: its validation, its placement on the
trainer pool) and the optimizer (Suggest). Errors come back as the domain errors of services/common/errors.py
(UNAVAILABLE and DEADLINE_EXCEEDED as Unavailable: the driver retries on its next pass)."""

from __future__ import annotations

from typing import Any

import grpc
from peftlab.v1 import gateway_pb2, gateway_pb2_grpc, optimizer_pb2, optimizer_pb2_grpc, trainer_pb2

from services.common import codec as common_codec
from services.common import transport
from services.common.errors import ServiceError, Unavailable, error_for_code
from services.common.identity import Principal
from services.common.interceptors import outgoing_metadata
from services.common.messages import params_from_proto
from services.common.metadata import FIELD_KEY
from services.common.spec import RunSpec

from . import codec
from .requests import Objective
from .state import TrialRecord

_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _error(exc: grpc.RpcError, what: str) -> ServiceError:
    if exc.code() in _TRANSIENT:
        return Unavailable(f"{what} unreachable: {exc.code().name}")
    field = dict(exc.trailing_metadata() or ()).get(FIELD_KEY, "")
    # The details already start with "<field>: "; the rebuilt error adds it again.
    message = (exc.details() or exc.code().name).removeprefix(f"{field}: " if field else "")
    return error_for_code(exc.code().name, message, field)


class GatewayRuns:
    """Submits and cancels runs through the gateway."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.channel = transport.channel(address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.timeout = timeout

    @staticmethod
    def _metadata(principal: Principal) -> tuple[tuple[str, str], ...]:
        # No token of its own: the service token, the user and the gateway's grant for them, so each run is
        # submitted with exactly that user's rights and limits.
        return outgoing_metadata(principal.metadata())

    def submit(
        self,
        spec: RunSpec,
        name: str,
        placement: dict[str, Any],
        labels: dict[str, str],
        experiment_id: str,
        principal: Principal,
    ) -> str:
        request = gateway_pb2.SubmitRunRequest(
            spec=common_codec.spec_to_proto(spec),
            name=name[:200],
            labels=labels,
            experiment_id=experiment_id,
        )
        common_codec.fill(request.placement, placement)
        try:
            reply = self.stub.SubmitRun(request, timeout=self.timeout, metadata=self._metadata(principal))
            return reply.run.id
        except grpc.RpcError as exc:
            raise _error(exc, "gateway") from None

    def cancel(self, run_id: str, reason: str, principal: Principal) -> None:
        try:
            self.stub.CancelRun(
                trainer_pb2.CancelRunRequest(run_id=run_id, reason=reason[:200]),
                timeout=self.timeout,
                metadata=self._metadata(principal),
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return  # it ended meanwhile
            raise _error(exc, "gateway") from None

    def close(self) -> None:
        self.channel.close()


class OptimizerClient:
    """Asks the optimizer for the next configurations of a study."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.channel = transport.channel(address)
        self.stub = optimizer_pb2_grpc.OptimizerStub(self.channel)
        self.timeout = timeout

    def suggest(
        self,
        space: dict[str, Any],
        trials: list[TrialRecord],
        n: int,
        seed: int,
        objectives: list[Objective],
    ) -> list[tuple[dict[str, Any], str]]:
        request = optimizer_pb2.SuggestRequest(
            space=codec.space_from_dict(space),
            trials=[codec.trial_to_proto(t) for t in trials],
            n=n,
            seed=seed,
            objectives=[codec.objective_to_proto(o) for o in objectives],
        )
        try:
            reply = self.stub.Suggest(request, timeout=self.timeout, metadata=outgoing_metadata())
        except grpc.RpcError as exc:
            raise _error(exc, "optimizer") from None
        return [
            (params_from_proto(s.params, f"suggestions[{i}].params"), s.source)
            for i, s in enumerate(reply.suggestions)
        ]

    def close(self) -> None:
        self.channel.close()
