"""One exception type per gRPC status code, raised by `services.client.Client` for a failed gateway call.

Catch the base `GatewayError` for any failure, or one subclass for one case (`NotFoundError` for an unknown
run id, `InvalidArgumentError` for a refused spec: its `field` names the input at fault).
"""

from __future__ import annotations

import grpc

FIELD_KEY = "peftlab-field"  # trailer naming the request field at fault (services/common/interceptors.py)
REQUEST_ID_KEY = "x-request-id"


class GatewayError(Exception):
    """A gateway call that failed: its status `code`, the server's `details`, the RPC `method`, the request
    `field` at fault (when the server named one) and the `request_id` to find it in the server's log."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, method: str = "", field: str = "", request_id: str = ""):
        self.details = details
        self.method = method
        self.field = field
        self.request_id = request_id
        super().__init__(
            f"{method}: {self.code.name}: {details}" if method else f"{self.code.name}: {details}"
        )


class CancelledError(GatewayError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(GatewayError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(GatewayError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(GatewayError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(GatewayError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(GatewayError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(GatewayError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(GatewayError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(GatewayError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_FOR_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def from_rpc_error(exc: grpc.RpcError, method: str = "") -> GatewayError:
    """The typed error for a failed call, with the field and request id from its trailers."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    trailers = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    cls = ERROR_FOR_CODE.get(code, UnknownError)
    return cls(details, method, str(trailers.get(FIELD_KEY, "")), str(trailers.get(REQUEST_ID_KEY, "")))
