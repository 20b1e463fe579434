"""The domain errors every service raises, each mapped to exactly one gRPC status code by the interceptor.

They carry no grpc types (the pure cores raise them too); `code` names the status. An error about one
request field names it, so a client can point at the input to fix.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a service raises on purpose; anything else becomes INTERNAL."""

    code = "INTERNAL"

    def __init__(self, message: str, field: str = ""):
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class Unimplemented(ServiceError):
    code = "UNIMPLEMENTED"


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        Unavailable,
        Unimplemented,
    )
}


def error_for_code(code: str, message: str, field: str = "") -> ServiceError:
    """Rebuild a domain error from its code name (e.g. one recorded in Redis or sent by a child process)."""
    error = _BY_CODE.get(code, ServiceError)(message, field)
    if type(error) is ServiceError:
        error.code = code or "INTERNAL"
    return error


def from_engine_error(exc: Exception) -> ServiceError:
    """Map an engine error (services/trainer/engine/errors.py) to its one status code.

    SpecError and DatasetError -> INVALID_ARGUMENT, ModelError and CheckpointError -> FAILED_PRECONDITION,
    OutOfMemory -> RESOURCE_EXHAUSTED. Imported lazily so services without the engine never load it.
    """
    from services.trainer.engine.errors import (
        CheckpointError,
        DatasetError,
        ModelError,
        OutOfMemory,
        SpecError,
    )

    if isinstance(exc, SpecError):
        return InvalidArgument(exc.problem, f"spec.{exc.field}")
    if isinstance(exc, DatasetError):
        return InvalidArgument(str(exc), "spec.data")
    if isinstance(exc, ModelError):
        return FailedPrecondition(str(exc), "spec.model")
    if isinstance(exc, CheckpointError):
        return FailedPrecondition(str(exc))
    if isinstance(exc, OutOfMemory):
        return ResourceExhausted(str(exc), "spec.memory_budget_gb")
    return ServiceError(str(exc))
