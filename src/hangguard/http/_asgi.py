"""The server side: an ASGI middleware that runs each request under the caller's deadline.

It reads ``Hangguard-Timeout-Ms`` (or Envoy's ``x-envoy-expected-rq-timeout-ms``), caps
it by the server's ``max_timeout``, and runs the app under that hangguard deadline, so
the handler's own calls (httpx through :class:`AsyncDeadlineTransport`, MCP calls, task
groups) inherit what is left. When it fires before the response has started, the
client gets a 504 with a body that says which budget ran out; after, the connection is
cut (a half-sent response cannot become a 504). Pure ASGI, so it sits in front of
Starlette, FastAPI, or the mcp SDK's streamable HTTP app alike.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._deadline import check_timeout, deadline
from .._exceptions import DeadlineExceeded
from .._semconv import (
    ATTR_ERROR_TYPE,
    ATTR_HTTP_REQUEST_METHOD,
    ATTR_HTTP_RESPONSE_STATUS_CODE,
    ATTR_HTTP_TIMEOUT_HEADER,
    ATTR_TIMEOUT_S,
    ATTR_URL_PATH,
    ERROR_TYPE_TIMEOUT,
    SPAN_HTTP_SERVER,
)
from .._spans import get_tracer
from ._header import parse_timeout

__all__ = ["AsgiDeadlineMiddleware"]

logger = logging.getLogger("hangguard.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
    }


def _is_event_stream(scope: Scope, headers: dict[str, str]) -> bool:
    accept = headers.get("accept", "")
    return scope.get("method") == "GET" and "text/event-stream" in accept


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class AsgiDeadlineMiddleware:
    """Run each HTTP request under the caller's deadline, capped by ``max_timeout``.

    ``max_timeout`` is the most a caller may ask for (``None``: no cap);
    ``default_timeout`` applies when the request carries no budget (``None``: none).
    A malformed header is answered 400, naming it. A GET for an event stream (SSE, the
    MCP streamable HTTP GET stream) that carries no budget runs unbounded. ``span``:
    ``None`` records a server span (with the caller's trace context) unless one is
    already current, as under OpenTelemetry's ASGI instrumentation; ``True``/``False``
    force it::

        app = Starlette(routes=routes)
        app = AsgiDeadlineMiddleware(app, max_timeout=30)
        # or: app.add_middleware(AsgiDeadlineMiddleware, max_timeout=30)
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_timeout: float | None = None,
        default_timeout: float | None = None,
        span: bool | None = None,
    ) -> None:
        self.app = app
        self._max = check_timeout(max_timeout, "max_timeout")
        self._default = check_timeout(default_timeout, "default_timeout")
        if span is not None and not isinstance(span, bool):
            raise TypeError(f"span must be True, False or None (auto), got {span!r}")
        self._span = span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            found = parse_timeout(headers)
        except ValueError as exc:
            await _respond(send, 400, {"error": "bad_request", "detail": str(exc)})
            return
        if found is None and _is_event_stream(scope, headers):
            # A long-lived stream (SSE, MCP's GET stream), not a request awaiting an
            # answer: a server-side budget would only cut it off.
            await self.app(scope, receive, send)
            return
        source, asked = found if found is not None else ("", self._default)
        budget = min(asked, self._max)
        tracer = get_tracer() if self._span is not False else None
        if tracer is None or (
            self._span is None and trace.get_current_span().get_span_context().is_valid
        ):
            await self._run(scope, receive, send, budget, source, None)
            return
        method = str(scope.get("method", "GET"))
        attrs: dict[str, Any] = {
            ATTR_HTTP_REQUEST_METHOD: method,
            ATTR_URL_PATH: str(scope.get("path", "")),
        }
        if not math.isinf(budget):
            attrs[ATTR_TIMEOUT_S] = budget
        if source:
            attrs[ATTR_HTTP_TIMEOUT_HEADER] = source
        parent = propagate.extract(headers)
        token = otel_context.attach(parent)
        try:
            with tracer.start_as_current_span(
                SPAN_HTTP_SERVER.format(method),
                kind=SpanKind.SERVER,
                attributes=attrs,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                await self._run(scope, receive, send, budget, source, span)
        finally:
            otel_context.detach(token)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        budget: float,
        source: str,
        span: trace.Span | None,
    ) -> None:
        started = False
        status = 0

        async def watched(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
            await send(message)

        if math.isinf(budget):
            await self.app(scope, receive, watched)
            _note_status(span, status)
            return
        name = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
        window = deadline(budget, name=name)
        try:
            async with window:
                await self.app(scope, receive, watched)
        except DeadlineExceeded as exc:
            if not window.expired:
                raise  # a deadline of the handler's own: its error, not the caller's
            if span is not None:
                span.set_attribute(ATTR_ERROR_TYPE, ERROR_TYPE_TIMEOUT)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            if started:
                # Half the response is out: only cutting the connection tells the client.
                logger.warning(
                    "%s: the deadline (%gs) passed after the response started; cut off",
                    name,
                    budget,
                )
                raise
            whose = f"the caller's ({source})" if source else "the server's default"
            await _respond(
                send,
                504,
                {
                    "error": "deadline_exceeded",
                    "detail": f"{name} did not finish within {budget:g}s: {whose} budget"
                    + (f", capped at max_timeout {self._max:g}s" if budget == self._max else ""),
                    "budget_s": budget,
                },
            )
            _note_status(span, 504)
            return
        _note_status(span, status)


def _note_status(span: trace.Span | None, status: int) -> None:
    if span is None or not status:
        return
    span.set_attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
    if status >= 500:
        span.set_attribute(ATTR_ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
