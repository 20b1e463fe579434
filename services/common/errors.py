"""The domain errors every service raises, each mapped to exactly one gRPC status code by the interceptor.

They carry no grpc types (the pure cores raise them too); `code` names the status. An error about one
request field names it, so a client can point at the input to fix.
"""

from __future__ import annotations

# Status details and trailers stay far below gRPC's 16 KB header limit (a huge echoed value would otherwise
# turn the caller's INVALID_ARGUMENT into RESOURCE_EXHAUSTED) and log lines stay readable.
MAX_DETAILS = 1000


def clip(text: str, limit: int = MAX_DETAILS) -> str:
    """`text`, cut to `limit` characters with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class ServiceError(Exception):
    """Base of the errors a service raises on purpose; anything else becomes INTERNAL."""

    code = "INTERNAL"

    def __init__(self, message: str, field: str = ""):
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class SpecError(InvalidArgument, ValueError):
    """A RunSpec field is invalid. `field` names it (without the `spec.` prefix a request adds), so a UI can
    point at the right input; `problem` is the message without the field."""

    def __init__(self, field: str, problem: str):
        self.problem = problem
        super().__init__(problem, field)


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


class PermissionDenied(ServiceError):
    """The caller is known but may not do this (e.g. cancel a run another user owns)."""

    code = "PERMISSION_DENIED"


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
        PermissionDenied,
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


class EngineError(Exception):
    """Base class for errors the MLX engine raises on purpose (never for bugs); the trainer maps each to a
    status (trainer/jobs.py)."""


class DatasetError(EngineError, ValueError):
    """A dataset file is unusable; names the file and, where there is one, the 1-based line. Raised by the
    engine's loader and by the gateway's dataset checks."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
