"""httpx transports that keep every request within the current hangguard deadline.

:class:`AsyncDeadlineTransport` and :class:`DeadlineTransport` wrap the transport an
``httpx.AsyncClient`` / ``httpx.Client`` sends through (by default httpx's own), so they
work under any SDK that accepts an httpx client, e.g. ``openai.AsyncOpenAI(http_client=)``.
For each request they

* cap httpx's connect/read/write/pool timeouts at the deadline's time left, and bound the
  response body by it too (httpx's timeouts are per operation: a server that drips a byte
  a second never trips a 5 s read timeout);
* send the time left in ``Hangguard-Timeout-Ms`` (see ``_header``);
* retry within the budget what is safe to repeat: a request that never left (refused
  connection, connect timeout), one the server says it did not process (503, 429), and
  for idempotent methods also a lost connection or a gateway's 502/504; ``Retry-After``
  is honoured when it fits in the time left (else the response is returned, its
  ``Retry-After``/``retry-after-ms`` cut to the time left, so that an SDK that sleeps on
  it cannot wait past the deadline); a refused connection is retried with backoff until
  the deadline, not only ``attempts`` times, as a server that restarts within the budget
  can still serve the call;
* leave the retrying of answers to the SDK above when it retries itself (openai and
  anthropic mark each try with ``x-stainless-retry-count``): one try of theirs is one
  request, so retries do not multiply;
* record an HTTP client span, unless OpenTelemetry's httpx instrumentation already does.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import _inflight
from .._deadline import current_deadline, now, remaining
from .._exceptions import DeadlineExceeded
from .._retry import RetryPolicy, as_policy, run_retrying, run_retrying_sync
from .._semconv import (
    ATTR_ERROR_TYPE,
    ATTR_HTTP_REQUEST_METHOD,
    ATTR_HTTP_REQUEST_RESEND_COUNT,
    ATTR_HTTP_RESPONSE_STATUS_CODE,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    ATTR_TIMEOUT_S,
    ATTR_URL_FULL,
    SPAN_HTTP_CLIENT,
)
from .._spans import get_tracer, record_failure
from ._header import TIMEOUT_HEADER, encode_timeout

__all__ = ["IDEMPOTENT_METHODS", "AsyncDeadlineTransport", "DeadlineTransport"]

#: Methods whose repetition has the effect of one request (RFC 9110 9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# The server says it did not process the request (RFC 9110 15.6.4; RFC 6585 4).
_NOT_PROCESSED: Final = frozenset({429, 503})
# A gateway's failure: the upstream may or may not have run the request.
_GATEWAY: Final = frozenset({502, 504})
_TIMEOUT_KEYS: Final = ("connect", "read", "write", "pool")
# Sent by the Stainless-generated SDKs (openai, anthropic) on each of their own tries.
SDK_RETRY_HEADER: Final = "x-stainless-retry-count"


class _RetryableResponse(Exception):
    """A response worth another attempt (kept open: it is returned if none follows)."""

    def __init__(self, response: httpx.Response, delay: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.delay = delay
        self.at = time.monotonic()

    def wait_left(self) -> float:
        """What is still to wait of the ``Retry-After`` it came with (0: none)."""
        if self.delay is None:
            return 0.0
        return max(0.0, self.delay - (time.monotonic() - self.at))


def _never(exc: Exception) -> bool:
    return False  # replaced per request by what that request may repeat


def _never_sent(exc: Exception) -> bool:
    # The connection was never made: the server saw nothing, so time, not a count, bounds it.
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


def _sdk_retries(request: httpx.Request) -> bool:
    return SDK_RETRY_HEADER in request.headers


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds from now (delta-seconds or an HTTP date), else ``None``."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_T = TypeVar("_T")


def _wrapped(transport: object, base: type[_T], default: Callable[[], _T]) -> _T:
    """The transport to wrap (httpx's default when ``None``), checked once for both twins."""
    inner = default() if transport is None else transport
    if not isinstance(inner, base):
        raise TypeError(f"transport must be an httpx.{base.__name__}, got {transport!r}")
    return inner


def _in_span(span: Span | None, request: httpx.Request) -> contextlib.AbstractContextManager[Any]:
    """The attempts run in the request's span, whose context goes out with the request."""
    if span is None:
        return contextlib.nullcontext()
    propagate.inject(request.headers, context=trace.set_span_in_context(span))
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _finished(span: Span | None, response: httpx.Response, sent: int) -> float:
    """End the span of a request answered after ``sent`` attempts; the time left after it.

    With a deadline, the response's ``Retry-After`` is capped to the time left.
    """
    if span is not None and sent > 1:
        span.set_attribute(ATTR_HTTP_REQUEST_RESEND_COUNT, sent - 1)
    _end(span, response, None)
    left = remaining()
    # Only an error's wait is slept on by an SDK (openai retries 408/409/429/5xx alone).
    if response.status_code >= 400 and not math.isinf(left):
        _cap_retry_after(response)
    return left


class _Rules:
    """What both transports decide the same way: timeouts, retries, spans."""

    def __init__(
        self,
        inner: object,
        retry: RetryPolicy | int | None,
        send_header: bool,
        span: bool | None,
        max_retry_after: float,
    ) -> None:
        self.policy = as_policy(retry, on=_never, replace_on=True)
        self.send_header = bool(send_header)
        if span is not None and not isinstance(span, bool):
            raise TypeError(f"span must be True, False or None (auto), got {span!r}")
        self.span = span
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, (int, float)):
            raise TypeError(f"max_retry_after must be a number of seconds, got {max_retry_after!r}")
        if not max_retry_after >= 0:
            raise ValueError(f"max_retry_after must be >= 0, got {max_retry_after!r}")
        self.max_retry_after = float(max_retry_after)
        # OpenTelemetry's httpx instrumentation wraps the transport's handler (wrapt, which
        # sets __wrapped__) or replaces the transport with its own: then it makes the span.
        handler = getattr(inner, "handle_async_request", None) or getattr(
            inner, "handle_request", None
        )
        self.instrumented = hasattr(handler, "__wrapped__") or any(
            cls.__module__.startswith("opentelemetry.") for cls in type(inner).__mro__
        )

    def prepare(self, request: httpx.Request) -> float:
        """Cap the request's timeouts at the time left and send it; returns the time left."""
        left = remaining()
        if math.isinf(left):
            return left
        if left <= 0:
            raise DeadlineExceeded(
                f"{_name(request)}{request.url.path}: no time left on the deadline to send it"
            )
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            key: left if given.get(key) is None else min(given[key], left) for key in _TIMEOUT_KEYS
        }
        if self.send_header:
            request.headers[TIMEOUT_HEADER] = encode_timeout(left)
        return left

    def retryable_error(self, exc: BaseException, request: httpx.Request, sdk: bool) -> bool:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return True  # nothing was sent
        if sdk or request.method not in IDEMPOTENT_METHODS or not _replayable(request):
            return False
        return isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))

    def answered(
        self,
        response: httpx.Response,
        request: httpx.Request,
        sdk: bool,
        pending: list[_RetryableResponse],
    ) -> httpx.Response:
        """``response``, or (kept in ``pending``) raised when it asks for another attempt."""
        if self.retry_response(response, request, sdk):
            failed = _RetryableResponse(response, _retry_after(response))
            pending.append(failed)
            raise failed
        return response

    def retry_response(self, response: httpx.Response, request: httpx.Request, sdk: bool) -> bool:
        """Whether ``response`` asks for another attempt that fits in the time left.

        Never when the SDK above retries itself: its next try is the retry.
        """
        if sdk:
            return False
        status = response.status_code
        if status not in _NOT_PROCESSED and not (
            status in _GATEWAY and request.method in IDEMPOTENT_METHODS
        ):
            return False
        if not _replayable(request):
            return False
        delay = _retry_after(response)
        if delay is None:
            return status != 429  # 429 without Retry-After: no hint when to come back
        return delay <= self.max_retry_after and delay + self.policy.min_attempt <= remaining()

    def policy_for(self, request: httpx.Request, sdk: bool) -> RetryPolicy:
        # The caller's policy says how often and how long; what is safe to retry is ours.
        def on(exc: Exception) -> bool:
            return isinstance(exc, _RetryableResponse) or self.retryable_error(exc, request, sdk)

        return self.policy._retrying(on)

    def start_span(self, request: httpx.Request, left: float) -> Span | None:
        if self.span is False or (self.span is None and self.instrumented):
            return None
        tracer = get_tracer()
        if tracer is None:
            return None
        url = request.url
        attrs: dict[str, Any] = {
            ATTR_HTTP_REQUEST_METHOD: request.method,
            ATTR_URL_FULL: str(url.copy_with(username=None, password=None, query=None)),
            ATTR_SERVER_ADDRESS: url.host,
        }
        if url.port is not None:
            attrs[ATTR_SERVER_PORT] = url.port
        if not math.isinf(left):
            attrs[ATTR_TIMEOUT_S] = left
        span = tracer.start_span(
            SPAN_HTTP_CLIENT.format(request.method), kind=SpanKind.CLIENT, attributes=attrs
        )
        _inflight.adopt_span(span)  # the request's in-flight entry shows this span
        return span


def _name(request: httpx.Request) -> str:
    # Names retries in events and metrics: the origin, not the URL (which has ids in it).
    url = request.url
    origin = url.host if url.port is None else f"{url.host}:{url.port}"
    return f"HTTP {request.method} {url.scheme}://{origin}"


def _replayable(request: httpx.Request) -> bool:
    # A body given as bytes can be sent again; a generator is consumed by the first try.
    return isinstance(request.stream, httpx.ByteStream)


def _cap_retry_after(response: httpx.Response) -> None:
    """Cut the response's ``Retry-After``/``retry-after-ms`` to the deadline's time left.

    The response is handed back because its wait did not fit (or an SDK above retries
    it itself); a caller that sleeps on the header then wakes at the deadline, where its
    next try fails at once with ``DeadlineExceeded`` instead of sleeping past it.
    """
    left = remaining()
    if math.isinf(left):
        return
    headers = response.headers
    wait = _retry_after(response)
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            wait = max(wait or 0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    if wait is None or wait <= left:
        return
    # At least 1 ms: SDKs read 0 as "no hint" and fall back to their own backoff.
    headers["retry-after-ms"] = str(max(1, int(left * 1000)))
    if "retry-after" in headers:
        headers["retry-after"] = str(max(0, int(left)))


def _end(span: Span | None, response: httpx.Response | None, exc: BaseException | None) -> None:
    if span is None:
        return
    try:
        if response is not None:
            span.set_attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, response.status_code)
            if response.status_code >= 400:
                span.set_attribute(ATTR_ERROR_TYPE, str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
        elif isinstance(exc, asyncio.CancelledError):
            pass  # cancellation is not an error
        elif exc is not None:
            record_failure(span, exc)
    finally:
        span.end()


class _AsyncBoundedStream(httpx.AsyncByteStream):
    """A response body whose reading ends at the deadline (httpx only bounds each read).

    A body read in the task whose deadline scope is armed to fire no later than ours needs
    no timer of its own (that scope cancels the read on time and raises DeadlineExceeded),
    just as a nested deadline scope needs none: ``client.get`` reads the body there, so
    the usual request pays for no timer per chunk.
    """

    def __init__(self, stream: httpx.AsyncByteStream, left: float, what: str) -> None:
        self._stream = stream
        self._until = asyncio.get_running_loop().time() + left
        self._expires_at = now() + left
        self._what = what

    def _covered(self) -> bool:
        d = current_deadline()
        return (
            d is not None
            and d.expires_at <= self._expires_at
            and d.enforced_in is not None
            and d.enforced_in is asyncio.current_task()
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        iterator = self._stream.__aiter__()
        while True:
            try:
                if self._covered():
                    chunk = await iterator.__anext__()
                else:
                    async with asyncio.timeout_at(self._until):
                        chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    f"{self._what}: the deadline passed while reading the response body"
                ) from exc
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _BoundedStream(httpx.SyncByteStream):
    """The sync body: each read is capped by httpx's read timeout; this caps the total."""

    def __init__(self, stream: httpx.SyncByteStream, left: float, what: str) -> None:
        self._stream = stream
        self._until = now() + left
        self._what = what

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if now() > self._until:
                raise DeadlineExceeded(
                    f"{self._what}: the deadline passed while reading the response body"
                )
            yield chunk

    def close(self) -> None:
        self._stream.close()


class AsyncDeadlineTransport(httpx.AsyncBaseTransport):
    """An httpx async transport that keeps each request within the current deadline.

    Wraps ``transport`` (default: ``httpx.AsyncHTTPTransport()``). ``retry`` is a
    :class:`hangguard.RetryPolicy` or a number of attempts (``1``: no retries; ``None``:
    ``HANGGUARD_RETRY_ATTEMPTS``); only what is safe to repeat is retried (see the
    module), never past the deadline. ``send_header`` puts the time left in
    ``Hangguard-Timeout-Ms``. ``span``: ``None`` records a client span unless
    OpenTelemetry's httpx instrumentation already does; ``True``/``False`` force it.
    A ``Retry-After`` longer than ``max_retry_after`` seconds or than the time left is
    not waited for: the response is returned::

        client = httpx.AsyncClient(transport=AsyncDeadlineTransport())
        async with hangguard.deadline(10):
            response = await client.get("http://127.0.0.1:8000/search")
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: RetryPolicy | int | None = None,
        send_header: bool = True,
        span: bool | None = None,
        max_retry_after: float = 30.0,
    ) -> None:
        self._inner = _wrapped(transport, httpx.AsyncBaseTransport, httpx.AsyncHTTPTransport)
        self._rules = _Rules(self._inner, retry, send_header, span, max_retry_after)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        what = _name(request)
        # Registered by hand, not by a decorator: one coroutine frame less on every
        # request, and the name is made once.
        with _inflight.entered(_inflight.open_entry(_inflight.HTTP, what)):
            rules = self._rules
            left = rules.prepare(request)
            sdk = _sdk_retries(request)
            span = rules.start_span(request, left)
            attempts = 0
            pending: list[_RetryableResponse] = []

            async def attempt() -> httpx.Response:
                nonlocal attempts
                if pending:
                    previous = pending.pop()
                    await previous.response.aclose()
                    if (wait := previous.wait_left()) > 0:
                        await asyncio.sleep(wait)
                if attempts:
                    rules.prepare(request)
                attempts += 1
                return rules.answered(
                    await self._inner.handle_async_request(request), request, sdk, pending
                )

            policy = rules.policy_for(request, sdk)
            try:
                with _in_span(span, request):
                    try:
                        response = await run_retrying(attempt, policy, what, by_time=_never_sent)
                    except _RetryableResponse as last:
                        response = last.response  # the last attempt asked for another
            except BaseException as exc:
                _end(span, None, exc)
                raise
            left = _finished(span, response, attempts)
            if not math.isinf(left):
                assert isinstance(response.stream, httpx.AsyncByteStream)
                response.stream = _AsyncBoundedStream(response.stream, left, what)
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class DeadlineTransport(httpx.BaseTransport):
    """The sync twin of :class:`AsyncDeadlineTransport`, for ``httpx.Client``.

    In sync code a hangguard deadline is readable, not enforced: here httpx's own
    timeouts, capped at the time left, and a check between body chunks do the enforcing::

        client = httpx.Client(transport=DeadlineTransport())
        with hangguard.deadline(10):
            response = client.get("http://127.0.0.1:8000/search")
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: RetryPolicy | int | None = None,
        send_header: bool = True,
        span: bool | None = None,
        max_retry_after: float = 30.0,
    ) -> None:
        self._inner = _wrapped(transport, httpx.BaseTransport, httpx.HTTPTransport)
        self._rules = _Rules(self._inner, retry, send_header, span, max_retry_after)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        what = _name(request)
        with _inflight.entered(_inflight.open_entry(_inflight.HTTP, what)):
            rules = self._rules
            left = rules.prepare(request)
            span = rules.start_span(request, left)
            try:
                with _in_span(span, request):
                    response, sent = self._send(request, what)
            except BaseException as exc:
                _end(span, None, exc)
                raise
            left = _finished(span, response, sent)
            if not math.isinf(left):
                assert isinstance(response.stream, httpx.SyncByteStream)
                response.stream = _BoundedStream(response.stream, left, what)
            return response

    def close(self) -> None:
        """Close the wrapped transport: its pool's connections go with the client."""
        self._inner.close()

    def _send(self, request: httpx.Request, what: str) -> tuple[httpx.Response, int]:
        # The same engine as the async transport (run_retrying_sync), blocking waits.
        rules = self._rules
        sdk = _sdk_retries(request)
        sent = 0
        pending: list[_RetryableResponse] = []

        def attempt() -> httpx.Response:
            nonlocal sent
            if pending:
                previous = pending.pop()
                previous.response.close()
                if (wait := previous.wait_left()) > 0:
                    time.sleep(wait)
            if sent:
                rules.prepare(request)
            sent += 1
            return rules.answered(self._inner.handle_request(request), request, sdk, pending)

        policy = rules.policy_for(request, sdk)
        try:
            response = run_retrying_sync(attempt, policy, what, by_time=_never_sent)
        except _RetryableResponse as last:
            response = last.response
        return response, sent
