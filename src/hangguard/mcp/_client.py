"""``McpClient``: an MCP client whose every connect and call ends within its budget.

It wraps the mcp SDK's ``Client`` on streamable HTTP, SSE or stdio and adds what op code
calling MCP servers needs: a connect timeout and a call timeout, both also bounded by the current
hangguard deadline; the time left sent to the server (``hangguard/timeout-ms``);
retries of transient failures within the budget; one clear exception per failure; and
an ``execute_tool <tool>`` span per call.

The SDK client lives in a task of its own (see ``_session``), so a crashing transport
never cancels the caller: the call fails with a typed error and the next one reconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import IO, Any, Final, TypeVar, cast

import mcp
import mcp_types
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from pydantic import ValidationError

from .. import _config
from .._deadline import check_timeout, deadline, deadline_cancel_of, remaining
from .._exceptions import DeadlineExceeded, McpError
from .._metrics import record_mcp_duration
from .._retry import RetryPolicy, retry_call
from .._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_REASON,
    ATTR_ERROR_TYPE,
    ATTR_GEN_AI_OPERATION_NAME,
    ATTR_GEN_AI_TOOL_CALL_ARGUMENTS,
    ATTR_GEN_AI_TOOL_CALL_RESULT,
    ATTR_GEN_AI_TOOL_NAME,
    ATTR_HTTP_RESPONSE_STATUS_CODE,
    ATTR_MCP_METHOD_NAME,
    ATTR_MCP_SERVER,
    ATTR_NETWORK_TRANSPORT,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    ATTR_TIMEOUT_S,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    ERROR_TYPE_TOOL_ERROR,
    EVENT_CANCELLED,
    SPAN_EXECUTE_TOOL,
)
from .._spans import get_tracer, guard, record_failure, safe_str
from ._capture import captured
from ._errors import (
    call_error,
    http_status,
    is_transient,
    span_error_type,
    tool_error,
)
from ._http import Exchange, current_exchange
from ._meta import TIMEOUT_META_KEY
from ._session import Session
from ._target import Target, resolve_target

__all__ = ["McpClient"]

logger = logging.getLogger("hangguard.mcp")

T = TypeVar("T")

# A server-side timeout this close to the caller's own deadline is that deadline.
_SAME_DEADLINE: Final = 0.05


def _record_duration(started: float, tool: str, error_type: str | None) -> None:
    record_mcp_duration(
        time.monotonic() - started, method="tools/call", tool=tool, error_type=error_type
    )


def _retry_policy(retry: RetryPolicy | int | None) -> RetryPolicy:
    if retry is None:
        return RetryPolicy(on=is_transient)
    if isinstance(retry, bool) or not isinstance(retry, (int, RetryPolicy)):
        raise TypeError(
            f"retry must be a hangguard.RetryPolicy, a number of attempts or None, got {retry!r}"
        )
    if isinstance(retry, int):
        return RetryPolicy(attempts=retry, on=is_transient)
    if retry.on is Exception:
        # The policy's default "retry everything" would retry tool errors and 404s.
        return dataclasses.replace(retry, on=is_transient)
    return retry


def _timeout_arg(value: float | None, param: str) -> float | None:
    return None if value is None else check_timeout(value, param)


class McpClient:
    """An MCP client that never hangs: bounded connects and calls, typed errors, a span per call.

    ``server`` is a URL (streamable HTTP; SSE when the path ends in ``/sse`` or
    ``transport="sse"``), a command to launch as a stdio server (a list of strings, or
    the SDK's ``StdioServerParameters``), an ``MCPServer`` to call in-process (tests,
    benchmarks) or an entry of an ``mcpServers`` config. As in flowllm's MCP ops,
    ``McpClient(name=..., config=...)`` looks the server up by name::

        async with hangguard.mcp.McpClient("http://127.0.0.1:8000/mcp", timeout=30) as client:
            result = await client.call_tool("search", {"query": "hangguard"})

    ``timeout`` bounds each call, all retries included (``None``: ``HANGGUARD_MCP_TIMEOUT``,
    30 s); ``connect_timeout`` bounds connecting with the handshake
    (``HANGGUARD_MCP_CONNECT_TIMEOUT``, 10 s); both are cut short by an enclosing
    ``hangguard.deadline``; ``math.inf`` means no limit of its own. ``retry`` is a
    :class:`RetryPolicy` or a number of attempts; only transient failures are retried
    (refused or reset connections, HTTP 502/503/504, timed-out connects) unless the
    policy says otherwise with its own ``on``. A tool result with ``isError`` is
    returned unless ``raise_on_error`` is set; then it raises ``McpToolError``.
    ``capture_content`` records arguments and results on the span (secret-looking keys
    redacted, ``capture_limit`` characters at most). ``protocol`` is the SDK's
    connect ``mode`` (``"auto"``, ``"legacy"`` or a protocol version). ``env``, ``cwd``
    and ``stderr`` (a file or descriptor; default: this process's) apply to a stdio
    server.

    Use one client from many tasks at once; it reconnects on the next call after the
    connection is lost. Close it with ``async with`` or :meth:`aclose`.
    """

    def __init__(
        self,
        server: object = None,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        transport: str = "auto",
        timeout: float | None = None,
        connect_timeout: float | None = None,
        retry: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: int | IO[Any] | None = None,
        raise_on_error: bool = False,
        capture_content: bool = False,
        capture_limit: int = 4096,
        protocol: str = "auto",
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, got {name!r}")
        if (
            isinstance(capture_limit, bool)
            or not isinstance(capture_limit, int)
            or capture_limit < 1
        ):
            raise ValueError(f"capture_limit must be a whole number >= 1, got {capture_limit!r}")
        self._target: Target = resolve_target(
            server,
            name=name,
            config=config,
            transport=transport,
            headers=headers,
            env=env,
            cwd=cwd,
        )
        self._name = name
        self._timeout = _timeout_arg(timeout, "timeout")
        self._connect_timeout = _timeout_arg(connect_timeout, "connect_timeout")
        self._policy = _retry_policy(retry)
        self._raise_on_error = bool(raise_on_error)
        self._capture = bool(capture_content)
        self._capture_limit = capture_limit
        if protocol not in ("auto", "legacy") and protocol not in MODERN_PROTOCOL_VERSIONS:
            raise ValueError(
                f"protocol must be 'auto', 'legacy' or one of {list(MODERN_PROTOCOL_VERSIONS)}, "
                f"got {protocol!r}"
            )
        self._label = f"{name!r} at {self._target.label}" if name else self._target.label
        self._session = Session(
            self._target,
            self._label,
            protocol=protocol,
            connect_timeout=self._connect_timeout,
            policy=self._policy,
            stderr=stderr,
        )
        attrs: dict[str, AttributeValue] = {
            ATTR_GEN_AI_OPERATION_NAME: "execute_tool",
            ATTR_MCP_METHOD_NAME: "tools/call",
            ATTR_MCP_SERVER: self._label,
        }
        if self._target.transport != "in-process":
            network = "pipe" if self._target.transport == "stdio" else "tcp"
            attrs[ATTR_NETWORK_TRANSPORT] = network
        if self._target.address is not None:
            attrs[ATTR_SERVER_ADDRESS] = self._target.address
        if self._target.port is not None:
            attrs[ATTR_SERVER_PORT] = self._target.port
        self._span_attrs = attrs

    # --- what it is connected to ---------------------------------------------------------

    @property
    def server(self) -> str:
        """The server as named in messages: the URL without credentials, or the command."""
        return self._target.label

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def transport(self) -> str:
        """``streamable-http``, ``sse``, ``stdio`` or ``in-process``."""
        return self._target.transport

    @property
    def connected(self) -> bool:
        conn = self._session.conn
        return conn is not None and conn.alive

    @property
    def server_pid(self) -> int | None:
        """The process id of the stdio server of the current connection (else ``None``)."""
        conn = self._session.conn
        return conn.pid if conn is not None else None

    @property
    def protocol_version(self) -> str | None:
        """The MCP protocol version negotiated on the current connection."""
        conn = self._session.conn
        return conn.client.protocol_version if conn is not None and conn.client else None

    @property
    def sdk_client(self) -> mcp.Client:
        """The mcp SDK's ``Client`` of the current connection, unguarded (advanced use)."""
        conn = self._session.conn
        if conn is None or conn.client is None or not conn.alive:
            raise RuntimeError(f"McpClient for {self._label} is not connected")
        return conn.client

    def __repr__(self) -> str:
        return f"McpClient({self._label}, transport={self._target.transport!r})"

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> McpClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On the way out of a failure there is no time for politeness.
        await self.aclose(abrupt=exc_type is not None)

    async def connect(self) -> None:
        """Connect now (``async with`` does this), within ``connect_timeout`` and the deadline.

        Raises ``McpConnectError`` naming the server and the reason, or
        ``DeadlineExceeded`` when an enclosing deadline fired first.
        """
        await self._session.live(explicit=True)

    async def aclose(self, *, abrupt: bool = False) -> None:
        """Close the session and wait (boundedly) until its transport and process are gone.

        ``abrupt`` skips the polite shutdown (session DELETE, stdin close and grace).
        """
        await self._session.close(abrupt=abrupt)

    # --- calls ---------------------------------------------------------------------------

    def _call_budget(self, timeout: float | None) -> float:
        if timeout is not None:
            return check_timeout(timeout, "timeout")
        if self._timeout is not None:
            return self._timeout
        return _config.mcp_timeout()

    async def _request(
        self,
        what: str,
        send: Callable[[mcp.Client, mcp_types.RequestParamsMeta | None], Awaitable[T]],
    ) -> T:
        """One attempt of a request: connect if needed, send with the time left, map errors."""
        try:
            conn = await self._session.live()
        except McpError as exc:
            if exc.tool is None:
                exc.tool = what
                exc.args = (f"{exc} (calling {what!r})", *exc.args[1:])
            raise
        client = conn.client
        assert client is not None
        exchange = Exchange()
        if self._target.transport == "sse":
            exchange.arm()
        # Read by the HTTP client in the context the SDK sends this request's messages in.
        token = current_exchange.set(exchange)
        try:
            left = remaining()
            meta = None
            if not math.isinf(left):
                # Rounded up, so that the server's deadline, which starts when the
                # request arrives, never fires before the caller's own.
                ms = math.ceil(left * 1000)
                meta = cast(mcp_types.RequestParamsMeta, {TIMEOUT_META_KEY: ms})
            return await send(client, meta)
        except MCPError as exc:
            err = call_error(exc, exchange, self._label, what, conn.lost())
            if (
                exc.code == CONNECTION_CLOSED
                or exchange.error is not None
                or exchange.status == 404
            ):
                conn.broken = True
            if exc.code == REQUEST_TIMEOUT and remaining() < _SAME_DEADLINE:
                # The server enforced the deadline we sent and answered a hair before
                # ours fired: let ours fire, so the caller sees its own DeadlineExceeded.
                await asyncio.sleep(remaining() + 0.001)
            raise err from exc
        except asyncio.CancelledError:
            if not exchange.claim_abort():
                raise
            conn.broken = True  # the SDK's SSE writer died with that request
            lost = MCPError(code=CONNECTION_CLOSED, message="the transport failed")
            raise call_error(lost, exchange, self._label, what) from exchange.error
        except (ValidationError, RuntimeError) as exc:
            raise McpError(
                f"MCP server {self._label} answered {what!r} with something the SDK rejects: {exc}",
                server=self._label,
                tool=what,
            ) from exc
        finally:
            exchange.disarm()
            current_exchange.reset(token)

    async def _bounded(self, what: str, budget: float, attempt: Callable[[], Awaitable[T]]) -> T:
        scope = deadline(budget, name=f"MCP {what} on {self._target.label}")
        try:
            async with scope:
                return await retry_call(attempt, self._policy, name=f"MCP {what} on {self._label}")
        except DeadlineExceeded as exc:
            if scope.expired:
                message = (
                    f"MCP call of {what!r} on {self._label} exceeded its timeout ({budget:g}s)"
                )
            else:
                message = f"MCP call of {what!r} on {self._label}: {exc}"
            raise DeadlineExceeded(
                message, deadline_name=exc.deadline_name, budget=exc.budget
            ) from exc

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        raise_on_error: bool | None = None,
    ) -> mcp_types.CallToolResult:
        """Call tool ``name``; ends within ``min(timeout, remaining deadline)``.

        Returns the SDK's ``CallToolResult``. Raises ``DeadlineExceeded`` when the time
        ran out (the request is cancelled on the wire), ``McpConnectError`` when the
        server cannot be reached or answers at the HTTP level, ``McpCallError`` for a
        JSON-RPC error, ``McpToolError`` for an ``isError`` result when ``raise_on_error``
        (default: the client's)::

            result = await client.call_tool("search", {"query": q}, timeout=10)
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty tool name, got {name!r}")
        if arguments is not None and not isinstance(arguments, Mapping):
            raise TypeError(f"arguments must be a mapping or None, got {arguments!r}")
        budget = self._call_budget(timeout)
        raise_ = self._raise_on_error if raise_on_error is None else bool(raise_on_error)
        args = None if arguments is None else dict(arguments)

        async def attempt() -> mcp_types.CallToolResult:
            result = await self._request(
                name, lambda client, meta: client.call_tool(name, args, meta=meta)
            )
            if result.is_error and raise_:
                raise tool_error(result, self._label, name)
            return result

        tracer = get_tracer()
        if tracer is None:
            started = time.monotonic()
            try:
                result = await self._bounded(name, budget, attempt)
            except Exception as exc:
                _record_duration(started, name, span_error_type(exc))
                raise
            _record_duration(started, name, ERROR_TYPE_TOOL_ERROR if result.is_error else None)
            return result
        attrs = dict(self._span_attrs)
        attrs[ATTR_GEN_AI_TOOL_NAME] = name
        attrs[ATTR_TIMEOUT_S] = min(budget, remaining())
        started = time.monotonic()
        with tracer.start_as_current_span(
            SPAN_EXECUTE_TOOL.format(name),
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if self._capture:
                with guard():
                    span.set_attribute(
                        ATTR_GEN_AI_TOOL_CALL_ARGUMENTS, captured(args or {}, self._capture_limit)
                    )
            try:
                result = await self._bounded(name, budget, attempt)
            except asyncio.CancelledError as exc:
                span.add_event(
                    EVENT_CANCELLED,
                    {
                        ATTR_CANCEL_REASON: CANCEL_DEADLINE
                        if deadline_cancel_of(exc) is not None
                        else CANCEL_PARENT,
                        ATTR_CANCEL_CAUSE: safe_str(exc),
                    },
                )
                raise
            except BaseException as exc:
                kind = span_error_type(exc)
                record_failure(span, exc, type_=kind)
                status = http_status(exc)
                if status is not None:
                    span.set_attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
                if isinstance(exc, Exception):
                    _record_duration(started, name, kind)
                raise
            if result.is_error:
                span.set_attribute(ATTR_ERROR_TYPE, ERROR_TYPE_TOOL_ERROR)
                span.set_status(Status(StatusCode.ERROR, "the tool reported an error (isError)"))
            if self._capture:
                with guard():
                    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
                    span.set_attribute(
                        ATTR_GEN_AI_TOOL_CALL_RESULT, captured(dumped, self._capture_limit)
                    )
            _record_duration(started, name, ERROR_TYPE_TOOL_ERROR if result.is_error else None)
            return result

    async def list_tools(self, *, timeout: float | None = None) -> list[mcp_types.Tool]:
        """All the server's tools (every page), within ``timeout`` and the deadline.

        The same errors as :meth:`call_tool`, and transient failures are retried::

            names = [tool.name for tool in await client.list_tools()]
        """
        budget = self._call_budget(timeout)

        async def send(
            client: mcp.Client, meta: mcp_types.RequestParamsMeta | None
        ) -> list[mcp_types.Tool]:
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor, meta=meta)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tools

        return await self._bounded("tools/list", budget, lambda: self._request("tools/list", send))
