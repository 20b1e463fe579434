"""A typed Python client of the peftlab gateway: `from services.client import Client` (services/client/client.py);
one exception class per gRPC status code (services/client/errors.py)."""

from services.client.client import RUN_STATUSES, TERMINAL_RUN, Client, run_spec, status_value
from services.client.connection import Connection
from services.client.errors import (
    ERROR_FOR_CODE,
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    from_rpc_error,
)

__all__ = [
    "ERROR_FOR_CODE",
    "RUN_STATUSES",
    "TERMINAL_RUN",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "Client",
    "Connection",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GatewayError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "from_rpc_error",
    "run_spec",
    "status_value",
]
