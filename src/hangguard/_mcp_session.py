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
from typing import IO, Any, Final

import mcp
import mcp_types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from . import _config
from ._deadline import deadline
from ._exceptions import DeadlineExceeded, McpConnectError
from ._mcp_errors import TRANSIENT_STATUSES, connect_error, mark_transient, root_cause
from ._mcp_stdio import stdio_transport
from ._mcp_transport import (
    Exchange,
    Target,
    buffered_writes,
    current_exchange,
    open_http_client,
    sse_client_factory,
)
from ._retry import RetryPolicy, retry_call
from ._version import __version__

__all__ = ["Connection", "Session"]

logger = logging.getLogger("hangguard.mcp")

_CLIENT_INFO: Final = mcp_types.Implementation(name="hangguard", version=__version__)


class _HandshakeAborted(Exception):
    """The owner's handshake was cut short by a failure its :class:`Exchange` saw."""


class Connection:
    """One session: the SDK client and the task that owns it."""

    __slots__ = ("broken", "buffer_writes", "client", "closing", "pid", "task")

    def __init__(self) -> None:
        self.buffer_writes = False
        self.client: mcp.Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()
        self.broken = False
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
    ) -> None:
        self.target = target
        self.label = label
        self._protocol = protocol
        self._connect_timeout = connect_timeout
        self._policy = policy
        self._stderr = stderr
        self.conn: Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    async def close(self, *, abrupt: bool = False) -> None:
        """Close the current connection (if any).

        Requests are refused afterwards, until an explicit ``live(explicit=True)``.
        """
        self._closed = True
        conn, self.conn = self.conn, None
        if conn is not None:
            await self._close(conn, abrupt=abrupt)

    async def _close(self, conn: Connection, *, abrupt: bool) -> None:
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
        if not task.done():
            logger.warning(
                "MCP connection to %s did not close within %gs; abandoned", self.label, grace
            )

    def _owner_done(self, conn: Connection, task: asyncio.Task[None]) -> None:
        if task.cancelled() or conn.client is None:
            return  # closed by us, or a failed connect (raised to the caller)
        exc = task.exception()
        if exc is not None and not conn.closing.is_set():
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
            transport: Any
            if target.transport == "in-process":
                transport = target.instance
            elif target.transport == "stdio":
                grace = _config.cancel_grace() * 0.4

                def spawned(pid: int) -> None:
                    conn.pid = pid

                transport = stdio_transport(
                    target, grace=grace, stderr=self._stderr, on_spawn=spawned
                )
            else:
                assert target.url is not None
                connect = self._connect_timeout_s()
                if target.transport == "sse":
                    transport = buffered_writes(
                        sse_client(
                            target.url,
                            httpx_client_factory=sse_client_factory(
                                lambda: open_http_client(target.headers, connect)
                            ),
                        )
                    )
                else:
                    http = await stack.enter_async_context(
                        open_http_client(target.headers, connect)
                    )

                    transport = buffered_writes(
                        streamable_http_client(target.url, http_client=http),
                        lambda: conn.buffer_writes,
                    )
            client = mcp.Client(transport, mode=self._protocol, client_info=_CLIENT_INFO)
            if target.transport == "sse":
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

    def _connect_timeout_s(self) -> float:
        if self._connect_timeout is not None:
            return self._connect_timeout
        return _config.mcp_connect_timeout()

    async def _connect_once(self) -> Connection:
        conn = Connection()
        exchange = Exchange()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._own(conn, ready, exchange), name=f"hangguard MCP {self.label}"
        )
        conn.task = task
        try:
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._close(conn, abrupt=True)
            raise
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

    async def _connect(self, *, retry: bool) -> Connection:
        budget = self._connect_timeout_s()
        scope = deadline(budget, name=f"MCP connect {self.target.label}")
        try:
            async with scope:
                if not retry:
                    return await self._connect_once()
                return await retry_call(
                    self._connect_once, self._policy, name=f"MCP connect {self.label}"
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
        """
        conn = self.conn
        if conn is not None and conn.alive:
            return conn
        if self._closed and not explicit:
            raise RuntimeError(f"McpClient for {self.label} is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self.conn
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                self.conn = None
                await self._close(conn, abrupt=True)
            self._closed = False
            self.conn = await self._connect(retry=explicit)
            return self.conn
