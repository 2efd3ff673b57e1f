"""The HTTP side of an MCP connection: what happened on the wire, and writes that never block.

Three jobs the mcp SDK leaves to its caller:

* knowing what really happened on the wire: the SDK folds every HTTP error into one
  JSON-RPC code, so the HTTP client here notes the status, content type and transport
  exception of each request in the :class:`Exchange` of the call that sent it (the SDK
  runs each outgoing message in its sender's context, which is how it is found);
* bounding the requests the SDK sends on its own (cancellation notices, the session
  DELETE), which no caller's deadline covers;
* writes that never block the caller where the SDK's writer waits for each POST
  (:func:`buffered_writes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import httpx2
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification
from opentelemetry import propagate

__all__ = [
    "Exchange",
    "buffered_writes",
    "current_exchange",
    "open_http_client",
    "sse_client_factory",
    "with_trace_context",
]

logger = logging.getLogger("hangguard.mcp")

# Requests the SDK sends on its own (notifications, the session DELETE): nobody waits for
# them under a deadline, and one stuck on a dead server blocks the SDK's writer.
_SIDE_REQUEST_TIMEOUT = 2.0
_CANCELLED = "notifications/cancelled"


@dataclass(slots=True)
class Exchange:
    """What the HTTP layer saw while one connect or call attempt was in flight.

    ``status`` and ``content_type`` are those of the first response that was an HTTP
    error or not JSON-RPC at all; ``error`` is the first transport exception. With
    ``task`` set (SSE, where the SDK loses such failures and the call would wait for an
    answer that cannot come), that task is cancelled at the first failure and ``aborted``
    is set, so the attempt can fail at once. ``session_lost`` is set by a 404 to a
    request that named a session: the server forgot it (restarted), the request never ran.
    """

    status: int | None = None
    content_type: str | None = None
    error: BaseException | None = None
    task: asyncio.Task[Any] | None = None
    aborted: bool = False
    requests: int = 0
    # Responses that came back with a status (any status, 2xx included).
    responses: int = 0
    session_lost: bool = False
    # The HTTP error answered with a JSON body (status, what the server said), which the
    # SDK may replace with a stand-in of its own; and the status that lost the session.
    answer: tuple[int, int | None, str] | None = None
    lost_status: int | None = None
    _armed: asyncio.Task[Any] | None = field(default=None, repr=False)
    _cancelling: int = field(default=0, repr=False)

    def arm(self) -> None:
        """Let a failure cancel the current task (see the class docstring)."""
        self.task = self._armed = asyncio.current_task()
        self._cancelling = self.task.cancelling() if self.task is not None else 0

    def disarm(self) -> None:
        """No more aborts from now on (a later failure is not this attempt's)."""
        self.task = None

    def claim_abort(self) -> bool:
        """After a ``CancelledError``: whether it was this exchange's abort, and only that."""
        task, self._armed = self._armed, None
        self.task = None
        if not self.aborted or task is None:
            return False
        return task.uncancel() <= self._cancelling

    def _abort(self) -> None:
        task = self.task
        if task is not None and not self.aborted and not task.done():
            self.aborted = True
            task.cancel("hangguard: the MCP transport failed")

    def note_session_lost(self, status: int) -> None:
        # Not an abort: the SDK answers the waiting request with the server's error.
        self.session_lost = True
        self.lost_status = status

    def note_answer(self, status: int, code: int | None, said: str) -> None:
        if self.answer is None:
            self.answer = (status, code, said)

    def note_response(self, status: int, content_type: str) -> None:
        media = content_type.split(";", 1)[0].strip().lower()
        http_error = status >= 400 and media != "application/json"
        not_jsonrpc = status == 200 and media not in ("application/json", "text/event-stream", "")
        if http_error or not_jsonrpc:
            if self.status is None:
                self.status, self.content_type = status, media
            self._abort()

    @property
    def unanswered(self) -> bool:
        """Every request of this attempt failed at the transport before any status came."""
        return (
            self.requests > 0
            and self.responses == 0
            and isinstance(self.error, httpx2.TransportError)
        )

    def note_error(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._abort()


#: The exchange of the attempt whose message is being sent (read in the HTTP client).
current_exchange: ContextVar[Exchange | None] = ContextVar("hangguard_mcp_exchange", default=None)


class _ObservedClient(httpx2.AsyncClient):
    """An httpx2 client that reports each request's outcome to the current exchange."""

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        exchange = current_exchange.get()
        if request.method == "DELETE" or (request.method == "POST" and _is_notification(request)):
            # A notification or the session DELETE: see _SIDE_REQUEST_TIMEOUT.
            request.extensions["timeout"] = httpx2.Timeout(_SIDE_REQUEST_TIMEOUT).as_dict()
        if exchange is None:
            return await super().send(request, **kwargs)
        exchange.requests += 1
        try:
            response = await super().send(request, **kwargs)
        except Exception as exc:
            exchange.note_error(exc)
            raise
        exchange.responses += 1
        status = response.status_code
        content_type = response.headers.get("content-type", "")
        if status >= 400:
            said = await _error_said(response, content_type)
            if _names_session(request) and (
                status == 404 or (status == 400 and _says_session_unknown(said))
            ):
                exchange.note_session_lost(status)
            if said[1]:
                exchange.note_answer(status, *said)
        exchange.note_response(status, content_type)
        return response


# The JSON-RPC code servers (the TypeScript SDK's among them) answer a stale session with.
_SERVER_ERROR = -32000


async def _error_said(response: httpx2.Response, content_type: str) -> tuple[int | None, str]:
    """The JSON-RPC error code and message of an HTTP error's JSON body ("" if none).

    Reading it here leaves it cached on the response for the SDK to read again.
    """
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return None, ""
    try:
        body = json.loads(await response.aread())
    except (httpx2.HTTPError, ValueError):
        return None, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else "",
    )


def _says_session_unknown(said: tuple[int | None, str]) -> bool:
    # A 400 is a session loss only when the server says so: the TypeScript SDK's servers
    # answer an unknown Mcp-Session-Id with 400 and -32000 "No valid session ID provided";
    # any other 400 (bad params) is an answer to keep.
    code, message = said
    return code == _SERVER_ERROR and "session" in message.lower()


def _names_session(request: httpx2.Request) -> bool:
    # The MCP spec: a 404 to a request that names a session (the Mcp-Session-Id header
    # of streamable HTTP, the session_id query of the SSE transport) means the server no
    # longer knows it; the request was not run, and the client must start a new session.
    return "mcp-session-id" in request.headers or "session_id" in request.url.params


def _is_notification(request: httpx2.Request) -> bool:
    # A cheap look at the body the SDK serialised: JSON-RPC requests carry an "id".
    try:
        return b'"id"' not in request.content
    except httpx2.RequestNotRead:
        return False


def open_http_client(
    headers: Mapping[str, str] | None, connect_timeout: float, *, max_connections: int = 100
) -> httpx2.AsyncClient:
    """The HTTP client of one connection; read timeouts are left to hangguard's deadlines."""
    connect = None if math.isinf(connect_timeout) else connect_timeout
    return _ObservedClient(
        headers=dict(headers) if headers else None,
        timeout=httpx2.Timeout(None, connect=connect),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=20),
    )


def sse_client_factory(
    client: Callable[[], httpx2.AsyncClient],
) -> Callable[..., httpx2.AsyncClient]:
    """Adapt :func:`open_http_client` to ``sse_client``'s ``httpx_client_factory``."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return client()

    return factory


# --- SSE ---------------------------------------------------------------------------------


def with_trace_context(item: SessionMessage) -> SessionMessage:
    """Give a ``notifications/cancelled`` the sender's W3C trace context in ``_meta``.

    The SDK sends that notice itself, with only the request id and a reason; the server
    side of the SDK reads trace context from any message's ``_meta``, so with it the
    server's span for the notice joins the caller's trace instead of starting its own.
    """
    message = item.message
    if not isinstance(message, JSONRPCNotification) or message.method != _CANCELLED:
        return item
    params = dict(message.params or {})
    meta = dict(params.get("_meta") or {})
    if "traceparent" in meta:
        return item
    propagate.inject(meta)
    if not meta:
        return item  # no trace in this context
    params["_meta"] = meta
    return SessionMessage(message.model_copy(update={"params": params}), metadata=item.metadata)


class _BufferedWriter:
    """The write end handed to the SDK session: while ``buffered()``, ``send`` never waits.

    The SDK's writers POST some messages one at a time and wait for the answer: every
    message over SSE, and notifications over streamable HTTP before the 2026-07-28
    protocol (among them the cancellation notice the SDK sends, shielded, for up to 5 s,
    when a caller's deadline fires). One POST a dead server never answers then blocks
    every later write, and the caller's deadline with it. Queueing here keeps the
    deadline; a forwarder hands the messages on in order, each in the context its sender
    had (which the SDK reads for request metadata and hangguard for the call's
    :class:`Exchange`). When ``buffered()`` is false, messages go straight through.
    """

    __slots__ = ("_buffered", "_queue", "_stream")

    def __init__(
        self,
        stream: Any,
        queue: MemoryObjectSendStream[tuple[contextvars.Context, SessionMessage]],
        buffered: Callable[[], bool],
    ) -> None:
        self._stream = stream
        self._queue = queue
        self._buffered = buffered

    async def send(self, item: SessionMessage, /) -> None:
        item = with_trace_context(item)
        if self._buffered():
            self._queue.send_nowait((contextvars.copy_context(), item))
        else:
            await self._stream.send(item)

    async def aclose(self) -> None:
        await self._queue.aclose()

    async def __aenter__(self) -> _BufferedWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def buffered_writes(
    transport: contextlib.AbstractAsyncContextManager[tuple[Any, Any]],
    buffered: Callable[[], bool] = lambda: True,
) -> AsyncIterator[tuple[Any, _BufferedWriter]]:
    """Wrap an SDK transport so that writes to it do not block while ``buffered()``.

    See :class:`_BufferedWriter`.
    """
    async with transport as (read_stream, write_stream):
        queue_in, queue_out = anyio.create_memory_object_stream[
            tuple[contextvars.Context, SessionMessage]
        ](math.inf)

        async def forward() -> None:
            async with queue_out:
                try:
                    async for context, message in queue_out:
                        await asyncio.create_task(write_stream.send(message), context=context)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # The SDK's writer died (over SSE: at a failed POST), so nothing more
                    # reaches the server: end the read side too, and the session fails
                    # every waiting request at once instead of at each one's deadline.
                    await read_stream.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(forward)
            try:
                yield read_stream, _BufferedWriter(write_stream, queue_in, buffered)
            finally:
                tg.cancel_scope.cancel()
