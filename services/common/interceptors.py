"""The one server interceptor every service installs (maps errors to status codes, logs each call, carries
the request id and run id in contextvars, bounds the open streams), and the token interceptors: the gateway's
bearer token for callers, the service token of the internal services.

Servicers raise the domain errors of services/common/errors.py; this is the only place that turns them
into gRPC statuses. An error from a downstream gRPC call (the gateway calling a trainer) keeps its code.
Anything else is a bug: INTERNAL with a generic message, and the traceback goes to the log.

Handlers are plain functions (run in the server's thread pool) or coroutines (the watches); each shape gets
a wrapper of the same shape, so a coroutine handler never blocks a thread.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import redis

from services.common import transport
from services.common.errors import (
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    clip,
)
from services.common.identity import CALLER_KEY, DEFAULT_USER, GRANT_KEY, ApiTokens
from services.common.logs import request_id_var, rpc_var, run_id_var
from services.common.metadata import FIELD_KEY, REQUEST_ID_KEY

log = logging.getLogger(__name__)

SERVICE_TOKEN_KEY = "x-peftlab-service-token"
# Calls too frequent to log at INFO.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_ID = 64


def outgoing_metadata(extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """Metadata for a downstream call: the current request id, so one id follows a request across services,
    and the service token that the internal services require (when one is configured)."""
    request_id = request_id_var.get()
    token = transport.service_token()
    out = ((SERVICE_TOKEN_KEY, token),) if token else ()
    return ((REQUEST_ID_KEY, request_id),) + out + extra if request_id else out + extra


def downstream_timeout(context: Any, default: float) -> float:
    """The deadline of a downstream call: ours if the caller set a shorter one (deadlines propagate)."""
    remaining = context.time_remaining()
    return default if remaining is None else max(0.05, min(default, remaining))


def call_alive(context: Any) -> Callable[[], bool]:
    """A predicate that turns False once the call ended (the caller left or its deadline passed)."""
    ended = threading.Event()
    context.add_callback(ended.set)

    def alive() -> bool:
        remaining = context.time_remaining()
        return not ended.is_set() and (remaining is None or remaining > 0)

    return alive


class _Undecodable:
    """What a request deserializer returns for bytes that are not the message (checked by the wrapper)."""

    def __init__(self, error: Exception):
        self.error = error


def _safe_deserializer(deserializer: Callable | None) -> Callable | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # gRPC's own handling answers INTERNAL "Exception deserializing request!"
            return _Undecodable(exc)

    return decode


def _safe_id(value: Any) -> str:
    """A run id fit for a log line: only the id alphabet, clipped (ids are validated later, not here)."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) > MAX_ID or not all(c.isalnum() or c in "-_" for c in value):
        return "<invalid>"
    return value


class _Call:
    """The bookkeeping of one call: context variables in, one log line and the status mapping out."""

    def __init__(self, method: str, context: Any, request: Any):
        self.method = method
        self.quiet = method.startswith(_QUIET_PREFIXES)
        metadata = dict(context.invocation_metadata() or ())
        self.request_id = _safe_id(metadata.get(REQUEST_ID_KEY)) or uuid.uuid4().hex[:12]
        run_id = getattr(request, "run_id", "") if request is not None else ""
        self.tokens = (
            rpc_var.set(method.rsplit("/", 1)[-1]),
            request_id_var.set(self.request_id),
            run_id_var.set(_safe_id(run_id)),
        )
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK

    def status_of(self, exc: BaseException, context: Any) -> tuple[grpc.StatusCode, str] | None:
        """The status `exc` maps to, or None if the handler aborted the call itself (its status stands)."""
        if isinstance(exc, grpc.aio.AbortError):
            return None
        if isinstance(exc, ServiceError):
            trailing = [(REQUEST_ID_KEY, self.request_id)]
            if exc.field:
                trailing.append((FIELD_KEY, clip(exc.field, 200)))
            context.set_trailing_metadata(tuple(trailing))
            return grpc.StatusCode[exc.code], clip(str(exc))
        if isinstance(exc, redis.RedisError):
            log.warning("redis unavailable: %s", clip(repr(exc), 300))
            return grpc.StatusCode.UNAVAILABLE, "the state store (Redis) is unavailable; retry shortly"
        if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):  # sync or aio call
            code = exc.code()
            if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                # A downstream bug is still ours to report, without its text.
                log.error("downstream error", extra={"code": code.name, "error": clip(exc.details() or "")})
                return (
                    code,
                    f"a downstream service failed (request id {self.request_id}); see the server logs",
                )
            # The downstream's field trailer goes on with its code: the caller's fix is the same.
            field = dict(exc.trailing_metadata() or ()).get(FIELD_KEY, "")
            trailing = [(REQUEST_ID_KEY, self.request_id)] + (
                [(FIELD_KEY, clip(field, 200))] if field else []
            )
            context.set_trailing_metadata(tuple(trailing))
            return code, clip(exc.details() or code.name)
        if isinstance(exc, NotImplementedError):  # a generated servicer's default body (e.g. Health/List)
            return grpc.StatusCode.UNIMPLEMENTED, "this server does not implement the method"
        log.error("unhandled error", exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id}); see the server log"

    def fail(self, exc: BaseException, context: Any) -> None:
        """Abort the call with the status `exc` maps to (a plain handler's context.abort raises)."""
        status = self.status_of(exc, context)
        if status is None:
            self.code = grpc.StatusCode.ABORTED
            raise exc
        self.code = status[0]
        context.abort(*status)

    async def fail_async(self, exc: BaseException, context: Any) -> None:
        status = self.status_of(exc, context)
        if status is None:
            self.code = grpc.StatusCode.ABORTED
            raise exc
        self.code = status[0]
        await context.abort(*status)

    def finish(self) -> None:
        elapsed_ms = round((time.perf_counter() - self.start) * 1000, 1)
        level = logging.DEBUG if self.quiet and self.code == grpc.StatusCode.OK else logging.INFO
        if self.code == grpc.StatusCode.INTERNAL:
            level = logging.ERROR
        log.log(level, "rpc", extra={"method": self.method, "code": self.code.name, "ms": elapsed_ms})
        for var, token in zip((rpc_var, request_id_var, run_id_var), self.tokens, strict=True):
            var.reset(token)


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request bytes are not a valid message of this method ({clip(str(request.error), 200)})"
        )


class StreamLimit:
    """At most `limit` server streams open at once; the next is refused with RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.open >= self.limit:
                raise ResourceExhausted(
                    f"{self.open} streams are open, the server's limit (PEFTLAB_MAX_STREAMS={self.limit}); "
                    "close a watch or retry later"
                )
            self.open += 1

    def leave(self) -> None:
        with self._lock:
            self.open -= 1


def _wrap_unary(method: str, behavior: Callable, streaming_request: bool) -> Callable:
    if inspect.iscoroutinefunction(behavior):

        async def handle_async(request: Any, context: Any) -> Any:
            call = _Call(method, context, None if streaming_request else request)
            try:
                _check_decoded(request)
                return await behavior(request, context)
            except Exception as exc:
                await call.fail_async(exc, context)
            finally:
                call.finish()

        return handle_async

    def handle(request: Any, context: Any) -> Any:
        call = _Call(method, context, None if streaming_request else request)
        try:
            _check_decoded(request)
            return behavior(request, context)
        except Exception as exc:
            call.fail(exc, context)
        finally:
            call.finish()

    return handle


@contextlib.asynccontextmanager
async def _async_stream_call(
    method: str, context: Any, request: Any, streaming_request: bool, limit: StreamLimit
) -> AsyncIterator[None]:
    """The bookkeeping of one coroutine stream: a slot of the stream bound, errors mapped, one log line."""
    call = _Call(method, context, None if streaming_request else request)
    try:
        _check_decoded(request)
        limit.enter()
        try:
            yield
        finally:
            limit.leave()
    except Exception as exc:
        await call.fail_async(exc, context)
    finally:
        call.finish()


def _wrap_stream(method: str, behavior: Callable, streaming_request: bool, limit: StreamLimit) -> Callable:
    if inspect.isasyncgenfunction(behavior):

        async def handle_async(request: Any, context: Any) -> AsyncIterator[Any]:
            async with _async_stream_call(method, context, request, streaming_request, limit):
                async for response in behavior(request, context):
                    yield response

        return handle_async

    if inspect.iscoroutinefunction(behavior):  # a stream written with context.write (grpc_health's Watch)

        async def handle_writer(request: Any, context: Any) -> None:
            async with _async_stream_call(method, context, request, streaming_request, limit):
                await behavior(request, context)

        return handle_writer

    def handle(request: Any, context: Any) -> Iterator[Any]:
        call = _Call(method, context, None if streaming_request else request)
        try:
            _check_decoded(request)
            limit.enter()
            try:
                yield from behavior(request, context)
            finally:
                limit.leave()
        except Exception as exc:
            call.fail(exc, context)
        finally:
            call.finish()

    return handle


def _rewrap(handler: grpc.RpcMethodHandler, method: str, limit: StreamLimit) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": _safe_deserializer(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_wrap_unary(method, handler.unary_unary, False), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(method, handler.unary_stream, False, limit), **kwargs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_wrap_unary(method, handler.stream_unary, True), **kwargs)
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream(method, handler.stream_stream, True, limit), **kwargs
    )


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping + call logging + request/run id context + the stream bound, for every RPC of a server."""

    def __init__(self, limit: StreamLimit | None = None):
        self.limit = limit or StreamLimit(2000)

    async def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _rewrap(handler, handler_call_details.method, self.limit)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that raises Unauthenticated (mapped by ServiceInterceptor)."""

    def deny(request: Any, context: Any) -> Any:
        raise Unauthenticated(message)

    def deny_stream(request: Any, context: Any) -> Iterator[Any]:
        raise Unauthenticated(message)
        yield  # pragma: no cover - makes this a generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)


def _matches(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode(), expected)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """The gateway's door: every call except health checks needs `authorization: Bearer <token>` of one of
    its users. A trusted service (holding the service token) may make the delegable calls (an experiment's
    SubmitRun and CancelRun) for a user with the grant the gateway gave for that user (identity.py)."""

    OPEN = ("/grpc.health.v1.Health/",)
    DELEGABLE = ("/peftlab.v1.Gateway/SubmitRun", "/peftlab.v1.Gateway/CancelRun")

    def __init__(self, users: ApiTokens | str):
        self.users = users if isinstance(users, ApiTokens) else ApiTokens({DEFAULT_USER: users})

    def _delegated(self, method: str, metadata: dict[str, Any]) -> str:
        """ "" when this is a valid call on a user's behalf, else why not."""
        service_token = transport.service_token()
        given = str(metadata.get(SERVICE_TOKEN_KEY, ""))
        if not service_token or not _matches(given, service_token.encode()):
            return f"invalid '{SERVICE_TOKEN_KEY}' for a call on a user's behalf"
        if method not in self.DELEGABLE:
            return f"{method.rsplit('/', 1)[-1]} cannot be called on a user's behalf"
        caller = str(metadata.get(CALLER_KEY, ""))
        if not self.users.grant_valid(caller, str(metadata.get(GRANT_KEY, ""))):
            return f"no valid grant for the user in '{CALLER_KEY}' (their token changed or was removed)"
        return ""

    async def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method.startswith(self.OPEN):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", ""))
        if self.users.user_of(given) is not None:
            return await continuation(handler_call_details)
        reason = "invalid bearer token" if given else "missing metadata 'authorization: Bearer <token>'"
        if not given and CALLER_KEY in metadata:
            reason = self._delegated(method, metadata)
            if not reason:
                return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _denied(handler, reason)


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """The internal services (trainer, optimizer, comparator) answer only callers holding the service token
    (metadata `x-peftlab-service-token`, PEFTLAB_SERVICE_TOKEN or PEFTLAB_SERVICE_TOKEN_FILE): the gateway,
    the comparator and the trainers. Health and reflection stay open (probes, grpcurl list)."""

    OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    def __init__(self, token: str):
        self._expected = token.encode()

    async def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        if handler_call_details.method.startswith(self.OPEN):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get(SERVICE_TOKEN_KEY, ""))
        handler = await continuation(handler_call_details)
        if handler is None or _matches(given, self._expected):
            return handler
        reason = (
            f"invalid service token in '{SERVICE_TOKEN_KEY}'"
            if given
            else f"this is an internal service: call it through the gateway (missing '{SERVICE_TOKEN_KEY}')"
        )
        return _denied(handler, reason)
