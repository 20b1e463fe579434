"""The one server interceptor every service installs (maps errors to status codes, logs each call, carries
the request id and run id in contextvars), and the bearer-token interceptor of the gateway.

Servicers raise the domain errors of services/common/errors.py; this is the only place that turns them
into gRPC statuses. An error from a downstream gRPC call (the gateway calling a trainer) keeps its code.
Anything else is a bug: INTERNAL with a generic message, and the traceback goes to the log.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import redis

from services.common.errors import ServiceError, Unauthenticated
from services.common.logs import request_id_var, rpc_var, run_id_var
from services.common.metadata import FIELD_KEY, REQUEST_ID_KEY

log = logging.getLogger(__name__)

# Calls too frequent to log at INFO.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def outgoing_metadata(extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """Metadata for a downstream call: the current request id, so one id follows a request across services."""
    request_id = request_id_var.get()
    return ((REQUEST_ID_KEY, request_id),) + extra if request_id else extra


def downstream_timeout(context: grpc.ServicerContext, default: float) -> float:
    """The deadline of a downstream call: ours if the caller set a shorter one (deadlines propagate)."""
    remaining = context.time_remaining()
    return default if remaining is None else max(0.05, min(default, remaining))


class _Call:
    """The bookkeeping of one call: context variables in, one log line and the status mapping out."""

    def __init__(self, method: str, metadata: dict[str, str], request: Any):
        self.method = method
        self.quiet = method.startswith(_QUIET_PREFIXES)
        self.request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:12]
        run_id = getattr(request, "run_id", "") if request is not None else ""
        self.tokens = (
            rpc_var.set(method.rsplit("/", 1)[-1]),
            request_id_var.set(self.request_id),
            run_id_var.set(run_id if isinstance(run_id, str) else ""),
        )
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK

    def fail(self, exc: BaseException, context: grpc.ServicerContext) -> None:
        """Record and abort the call with the status `exc` maps to (context.abort raises)."""
        if isinstance(exc, ServiceError):
            self.code = grpc.StatusCode[exc.code]
            trailing = [(REQUEST_ID_KEY, self.request_id)]
            if exc.field:
                trailing.append((FIELD_KEY, exc.field))
            context.set_trailing_metadata(tuple(trailing))
            context.abort(self.code, str(exc))
        if isinstance(exc, redis.RedisError):
            self.code = grpc.StatusCode.UNAVAILABLE
            log.warning("redis unavailable", extra={"error": str(exc)})
            context.abort(self.code, "the state store (Redis) is unavailable; retry shortly")
        if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
            self.code = exc.code()
            context.abort(self.code, exc.details() or self.code.name)
        if context.code() not in (None, grpc.StatusCode.OK):
            # The handler called context.abort itself; its status stands.
            self.code = context.code()
            raise exc
        self.code = grpc.StatusCode.INTERNAL
        log.error("unhandled error", exc_info=exc)
        context.abort(
            grpc.StatusCode.INTERNAL, f"internal error (request id {self.request_id}); see the server log"
        )

    def finish(self) -> None:
        elapsed_ms = round((time.perf_counter() - self.start) * 1000, 1)
        level = logging.DEBUG if self.quiet and self.code == grpc.StatusCode.OK else logging.INFO
        if self.code == grpc.StatusCode.INTERNAL:
            level = logging.ERROR
        log.log(level, "rpc", extra={"method": self.method, "code": self.code.name, "ms": elapsed_ms})
        for var, token in zip((rpc_var, request_id_var, run_id_var), self.tokens, strict=True):
            var.reset(token)


def _wrap_unary_response(method: str, behavior: Callable, streaming_request: bool) -> Callable:
    def handle(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(
            method, dict(context.invocation_metadata()), None if streaming_request else request_or_iterator
        )
        try:
            return behavior(request_or_iterator, context)
        except Exception as exc:
            call.fail(exc, context)
        finally:
            call.finish()

    return handle


def _wrap_stream_response(method: str, behavior: Callable, streaming_request: bool) -> Callable:
    def handle(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(
            method, dict(context.invocation_metadata()), None if streaming_request else request_or_iterator
        )
        try:
            yield from behavior(request_or_iterator, context)
        except Exception as exc:
            call.fail(exc, context)
        finally:
            call.finish()

    return handle


def _rewrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(method, handler.unary_unary, False), **kwargs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(method, handler.unary_stream, False), **kwargs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(method, handler.stream_unary, True), **kwargs
        )
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream_response(method, handler.stream_stream, True), **kwargs
    )


class ServiceInterceptor(grpc.ServerInterceptor):
    """Error mapping + call logging + request/run id context, for every RPC of a server."""

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _rewrap(handler, handler_call_details.method)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that raises Unauthenticated (mapped by ServiceInterceptor)."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        raise Unauthenticated(message)

    def deny_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
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


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every call except health checks needs `authorization: Bearer <token>` (the gateway's PEFTLAB_API_TOKEN)."""

    OPEN = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method.startswith(self.OPEN):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = "invalid bearer token" if given else "missing metadata 'authorization: Bearer <token>'"
        return _denied(handler, reason)
