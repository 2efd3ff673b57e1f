"""The connection of an ``McpClient``: the SDK client in a task of its own.

The SDK's ``Client`` is entered by an owner task, not by the caller. When a transport
crashes (the server killed, a refused POST), the SDK cancels whichever task entered it:
with the owner in between, that is never the caller, whose request instead fails with
``CONNECTION_CLOSED`` and becomes a typed error, and the next request reconnects.
Connecting is bounded by ``connect_timeout`` and the current deadline; closing is
bounded by ``HANGGUARD_CANCEL_GRACE`` (twice: polite, then cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any, Final

import mcp
import mcp_types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .. import _config
from .._deadline import deadline
from .._exceptions import DeadlineExceeded, McpConnectError
from .._retry import RetryPolicy, retry_call
from .._version import __version__
from ._errors import TRANSIENT_STATUSES, connect_error, mark_transient, root_cause
from ._http import (
    Exchange,
    buffered_writes,
    current_exchange,
    open_http_client,
    sse_client_factory,
)
from ._stdio import stdio_transport
from ._target import Target, TransportName

__all__ = ["Connection", "Session"]

logger = logging.getLogger("hangguard.mcp")

_CLIENT_INFO: Final = mcp_types.Implementation(name="hangguard", version=__version__)


class _HandshakeAborted(Exception):
    """The owner's handshake was cut short by a failure its :class:`Exchange` saw."""


class Connection:
    """One session: the SDK client and the task that owns it."""

    __slots__ = (
        "abandoned",
        "broken",
        "buffer_writes",
        "client",
        "closed",
        "closing",
        "pid",
        "session_lost",
        "task",
    )

    def __init__(self) -> None:
        self.buffer_writes = False
        self.client: mcp.Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()  # the polite close: the owner leaves on its own
        self.closed = False  # a close (polite or not) was started
        self.abandoned = False  # the owner outlived the close's grace (logged once)
        self.broken = False
        # The server answered 404 to this session: every request on it goes unanswered.
        self.session_lost = False
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return (
            not self.broken
            and self.client is not None
            and self.task is not None
            and not self.task.done()
        )

    def lost(self) -> BaseException | None:
        """Why the owner ended, if it has."""
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()


class Session:
    """Connects, reconnects after a loss, and closes, for one ``McpClient``."""

    def __init__(
        self,
        target: Target,
        label: str,
        *,
        protocol: str,
        connect_timeout: float | None,
        policy: RetryPolicy,
        stderr: int | IO[Any] | None,
        on_notification: Callable[[object], None] | None = None,
    ) -> None:
        self.target = target
        # Told of each server notification (the client drops its tool list on list_changed).
        self._on_notification = on_notification
        self.label = label
        self._protocol = protocol
        self._connect_timeout = connect_timeout
        self._policy = policy
        self.stderr = stderr
        self.conn: Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False
        # Bumped by each close(): a connect begun before it must not outlive it.
        self._epoch = 0
        self._connecting: set[Connection] = set()
        # Raises when the server's circuit breaker is open (set by the client).
        self.gate: Callable[[], None] | None = None

    async def close(self, *, abrupt: bool = False) -> None:
        """Close the current connection (if any) and tear down a connect in flight.

        Requests are refused afterwards, until an explicit ``live(explicit=True)``; a
        connect that was in flight fails with ``McpConnectError``.
        """
        self._closed = True
        self._epoch += 1
        conn, self.conn = self.conn, None
        closes = [self._close(c, abrupt=True) for c in self._connecting if c is not conn]
        if conn is not None:
            closes.append(self._close(conn, abrupt=abrupt))
        if len(closes) == 1:
            await closes[0]
        elif closes:
            await asyncio.gather(*closes)

    def _closed_error(self) -> McpConnectError:
        return McpConnectError(
            f"cannot connect to MCP server {self.label}: the client was closed while connecting",
            server=self.label,
        )

    async def _close(self, conn: Connection, *, abrupt: bool) -> None:
        conn.closed = True
        task = conn.task
        if task is None:
            return
        grace = _config.cancel_grace()
        try:
            if not abrupt:
                conn.closing.set()
                await asyncio.wait({task}, timeout=grace)
            if not task.done():
                task.cancel("hangguard: closing the MCP connection")
                await asyncio.wait({task}, timeout=grace)
        finally:
            # Cancelled while waiting: the owner must still go, even if unawaited.
            if not task.done():
                task.cancel("hangguard: closing the MCP connection")
        if not task.done() and not conn.abandoned:
            conn.abandoned = True
            logger.warning(
                "MCP connection to %s did not close within %gs; abandoned", self.label, grace
            )

    def _owner_done(self, conn: Connection, task: asyncio.Task[None]) -> None:
        """Log how an owner ended whose outcome is no caller's to see (attached for that)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if conn.closed:
            logger.warning(
                "MCP connection to %s failed while closing: %s",
                self.label,
                root_cause(exc),
                exc_info=exc,
            )
        else:
            logger.warning(
                "MCP connection to %s lost: %s", self.label, root_cause(exc), exc_info=exc
            )

    async def _own(self, conn: Connection, ready: asyncio.Future[None], exchange: Exchange) -> None:
        current_exchange.set(exchange)  # this task's own context: the connect's requests
        try:
            await self._serve(conn, ready, exchange)
        except asyncio.CancelledError:
            if exchange.claim_abort():
                raise _HandshakeAborted from None
            raise

    async def _serve(
        self, conn: Connection, ready: asyncio.Future[None], exchange: Exchange
    ) -> None:
        target = self.target
        async with contextlib.AsyncExitStack() as stack:
            transport = await _OPENERS[target.transport](self, conn, stack)
            client = mcp.Client(
                transport,
                mode=self._protocol,
                client_info=_CLIENT_INFO,
                message_handler=self._message_handler(),
            )
            if target.spec.loses_failures:
                # The SDK's SSE writer dies on a failed POST and the handshake would wait
                # for an answer that cannot come: fail it at once instead.
                exchange.arm()
            try:
                await stack.enter_async_context(client)
            finally:
                exchange.disarm()
            # Before 2026-07-28, the SDK's HTTP writer POSTs notifications and waits.
            conn.buffer_writes = client.protocol_version not in MODERN_PROTOCOL_VERSIONS
            if (
                self._protocol == "auto"
                and conn.buffer_writes
                and exchange.status in TRANSIENT_STATUSES
            ):
                # The SDK takes any error to server/discover for "a legacy server".
                logger.warning(
                    "MCP server %s answered the protocol probe with HTTP %s; the session "
                    "fell back to protocol %s",
                    self.label,
                    exchange.status,
                    client.protocol_version,
                )
            conn.client = client
            ready.set_result(None)
            await conn.closing.wait()

    def _message_handler(self) -> Any:
        notify = self._on_notification
        if notify is None:
            return None

        async def handle(message: object) -> None:
            notify(message)
            await asyncio.sleep(0)  # as the SDK's default handler: a checkpoint

        return handle

    def connect_timeout_s(self) -> float:
        if self._connect_timeout is not None:
            return self._connect_timeout
        return _config.mcp_connect_timeout()

    async def _connect_once(self, epoch: int) -> Connection:
        if self._epoch != epoch:
            raise self._closed_error()
        conn = Connection()
        exchange = Exchange()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._own(conn, ready, exchange), name=f"hangguard MCP {self.label}"
        )
        conn.task = task
        self._connecting.add(conn)  # close() tears it down from now on
        try:
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: self._owner_done(conn, t))
            await self._close(conn, abrupt=True)
            raise
        finally:
            self._connecting.discard(conn)
        if self._epoch != epoch:
            # close() was called meanwhile and has cancelled the owner: see it gone.
            await self._close(conn, abrupt=True)
            if not task.done():
                task.add_done_callback(lambda t: self._owner_done(conn, t))
                raise self._closed_error()
            if task.cancelled() or task.exception() is None:
                raise self._closed_error()
            raise self._closed_error() from task.exception()
        if ready.done() and not task.done():
            task.add_done_callback(lambda t: self._owner_done(conn, t))
            return conn
        ready.cancel()
        if task.cancelled():
            raise McpConnectError(
                f"the connection to MCP server {self.label} was cancelled", server=self.label
            )
        exc = task.exception()
        assert exc is not None  # the owner only returns after `closing`, which is unset
        if isinstance(exc, _HandshakeAborted):
            raise connect_error(exc, exchange, self.label) from exchange.error
        cause = root_cause(exc)
        if cause is not exc:
            logger.debug("connecting to MCP server %s failed", self.label, exc_info=exc)
        raise connect_error(exc, exchange, self.label) from cause

    async def _connect(self, *, retry: bool, epoch: int) -> Connection:
        budget = self.connect_timeout_s()
        scope = deadline(budget, name=f"MCP connect {self.target.label}")
        try:
            async with scope:
                if not retry:
                    return await self._connect_once(epoch)
                return await retry_call(
                    lambda: self._connect_once(epoch),
                    self._policy,
                    name=f"MCP connect {self.label}",
                )
        except DeadlineExceeded as exc:
            if not scope.expired:
                raise
            err = McpConnectError(
                f"cannot connect to MCP server {self.label}: no handshake within "
                f"connect_timeout {budget:g}s",
                server=self.label,
            )
            # A connect that timed out may succeed on the next attempt of a call.
            raise mark_transient(err) from exc

    async def live(self, *, explicit: bool = False) -> Connection:
        """The live connection, connecting first if needed.

        Only an ``explicit`` connect retries on its own (within a call, the call's retries
        cover the connect too, so that they do not multiply) or reopens a closed client.
        A ``close()`` from the moment this is called on makes it fail with
        ``McpConnectError`` (the connection it was making is torn down).
        """
        conn = self.conn
        if conn is not None and conn.alive:
            return conn
        if self._closed and not explicit:
            raise RuntimeError(f"McpClient for {self.label} is closed")
        epoch = self._epoch
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._epoch != epoch:
                raise self._closed_error()
            conn = self.conn
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                self.conn = None
                await self._close(conn, abrupt=True)
                if self._epoch != epoch:
                    raise self._closed_error()
            self._closed = False
            if self.gate is not None:
                # Callers queued on the lock while the breaker opened go no further.
                self.gate()
            conn = await self._connect(retry=explicit, epoch=epoch)
            if self._epoch != epoch:  # closed since _connect_once checked
                await self._close(conn, abrupt=True)
                raise self._closed_error()
            self.conn = conn
            return conn


# --- how each transport is opened (one entry per name in _target.TRANSPORTS) ------------

_Opener = Callable[[Session, Connection, contextlib.AsyncExitStack], Awaitable[Any]]


async def _open_in_process(session: Session, conn: Connection, stack: Any) -> Any:
    return session.target.instance


async def _open_stdio(session: Session, conn: Connection, stack: Any) -> Any:
    def spawned(pid: int) -> None:
        conn.pid = pid

    grace = _config.cancel_grace() * 0.4
    # Not buffered: only so that a cancel notice gets the trace context.
    return buffered_writes(
        stdio_transport(session.target, grace=grace, stderr=session.stderr, on_spawn=spawned),
        lambda: False,
    )


async def _open_sse(session: Session, conn: Connection, stack: Any) -> Any:
    target = session.target
    assert target.url is not None
    connect = session.connect_timeout_s()
    return buffered_writes(
        sse_client(
            target.url,
            httpx_client_factory=sse_client_factory(
                lambda: open_http_client(target.headers, connect)
            ),
        )
    )


async def _open_streamable_http(
    session: Session, conn: Connection, stack: contextlib.AsyncExitStack
) -> Any:
    target = session.target
    assert target.url is not None
    http = await stack.enter_async_context(
        open_http_client(target.headers, session.connect_timeout_s())
    )
    return buffered_writes(
        streamable_http_client(target.url, http_client=http), lambda: conn.buffer_writes
    )


_OPENERS: Final[Mapping[TransportName, _Opener]] = {
    "in-process": _open_in_process,
    "stdio": _open_stdio,
    "sse": _open_sse,
    "streamable-http": _open_streamable_http,
}
