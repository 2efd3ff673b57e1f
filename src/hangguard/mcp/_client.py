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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import IO, Any, Final, TypeVar, cast

import mcp
import mcp_types
from mcp.shared.exceptions import MCPError as SdkMcpError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from pydantic import ValidationError

from .. import _config, _inflight
from .._cancel_record import CancelRecord
from .._deadline import check_timeout, deadline, remaining
from .._exceptions import (
    DeadlineExceeded,
    McpCircuitOpen,
    McpConnectError,
    McpError,
    McpUnknownToolError,
)
from .._metrics import record_mcp_duration
from .._retry import RetryPolicy, as_policy, retry_call, run_retrying
from .._retry_budget import budget_var
from .._semconv import (
    ANNOTATIONS_CACHED,
    ANNOTATIONS_LEARNED,
    ATTR_ERROR_TYPE,
    ATTR_EXCEPTION_MESSAGE,
    ATTR_EXCEPTION_TYPE,
    ATTR_GEN_AI_OPERATION_NAME,
    ATTR_GEN_AI_TOOL_CALL_ARGUMENTS,
    ATTR_GEN_AI_TOOL_CALL_RESULT,
    ATTR_GEN_AI_TOOL_NAME,
    ATTR_HTTP_RESPONSE_STATUS_CODE,
    ATTR_MCP_METHOD_NAME,
    ATTR_MCP_RESEND_ANNOTATIONS,
    ATTR_MCP_RESEND_RULE,
    ATTR_MCP_SERVER,
    ATTR_NETWORK_TRANSPORT,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    ATTR_TIMEOUT_S,
    BREAKER_HALF_OPEN,
    ERROR_TYPE_TOOL_ERROR,
    EVENT_MCP_RESEND,
    EVENT_MCP_RESEND_REFUSED,
    EVENT_MCP_SESSION_LOST,
    RESEND_ALLOW_LIST,
    RESEND_CALLER,
    RESEND_IDEMPOTENT_HINT,
    RESEND_NOT_IDEMPOTENT,
    RESEND_NOT_SENT,
    RESEND_READ_ONLY_HINT,
    RESEND_SESSION_LOST,
    RESEND_TOOL_LIST_UNKNOWN,
    SPAN_EXECUTE_TOOL,
)
from .._spans import contained, error_type, get_tracer, record_failure
from ._breaker import breaker_for
from ._capture import captured
from ._errors import (
    call_error,
    http_status,
    is_transient,
    mark_sent,
    mark_transient,
    maybe_sent,
    set_http_status,
    span_error_type,
    tool_error,
)
from ._http import Exchange, current_exchange
from ._meta import TIMEOUT_META_KEY
from ._progress import IdleWatch
from ._session import Connection, Session
from ._target import Target, TransportSpec, resolve_target

__all__ = ["McpClient"]

logger = logging.getLogger("hangguard.mcp")

T = TypeVar("T")

# A server-side timeout this close to the caller's own deadline is that deadline.
_SAME_DEADLINE: Final = 0.05


def _record_duration(started: float, tool: str, error_type: str | None) -> None:
    record_mcp_duration(
        time.monotonic() - started, method="tools/call", tool=tool, error_type=error_type
    )


def _never_left(spec: TransportSpec, exchange: Exchange) -> bool:
    """Whether the request of a failed attempt provably never reached the server's handler."""
    if not spec.http:
        return False
    if exchange.requests == 0:
        # The HTTP client saw no request of this call: the stream was already closed
        # when the SDK wrote it.
        return True
    # Over a transport whose server answers the POST before running the message (SSE),
    # a POST that got no status at all (refused, reset, closed unanswered) never ran.
    return spec.acks_before_running and exchange.unanswered


class _SessionLost(Exception):
    """The server answered 404 to a request naming the session: it forgot the session."""

    def __init__(self, error: McpConnectError) -> None:
        super().__init__(str(error))
        self.error = error


def _note(event: str, rule: str, exc: BaseException, annotations: str | None = None) -> None:
    """Say on the current span whether a failed request is sent again, and by which rule."""
    span = trace.get_current_span()
    if span.is_recording():
        attrs: dict[str, AttributeValue] = {
            ATTR_MCP_RESEND_RULE: rule,
            ATTR_EXCEPTION_TYPE: error_type(exc),
            ATTR_EXCEPTION_MESSAGE: str(exc),
        }
        if annotations is not None:
            attrs[ATTR_MCP_RESEND_ANNOTATIONS] = annotations
        span.add_event(event, attrs)


# The rules read from a tool's annotations (the others need no tool list).
_ANNOTATION_RULES: Final = frozenset(
    {RESEND_READ_ONLY_HINT, RESEND_IDEMPOTENT_HINT, RESEND_NOT_IDEMPOTENT}
)


def _identity(conn: Connection) -> tuple[str | None, ...]:
    """What tells one server instance from another across reconnects.

    The server's ``serverInfo`` (name, version), the protocol version and the capabilities
    it announced: a server restarted from the same build reads the same, and its tools'
    annotations are the same code; a different build or server at that address reads
    differently. A session id cannot tell: every reconnect gets a new one, and a stateless
    server has none.
    """
    client = conn.client
    if client is None:
        return (None,)
    info = client.server_info
    caps = client.server_capabilities
    return (
        None if info is None else info.model_dump_json(exclude_none=True),
        client.protocol_version,
        None if caps is None else caps.model_dump_json(exclude_none=True),
    )


@dataclasses.dataclass(frozen=True)
class _Repeat:
    """Whether a request that may have run may be sent again, by which rule, and from what."""

    safe: bool
    rule: str
    annotations: str | None = None  # ANNOTATIONS_CACHED/LEARNED for an annotation rule
    why_unknown: str | None = None  # why learning the tool list failed


def _retry_policy(retry: RetryPolicy | int | None) -> RetryPolicy:
    # The policy's default "retry everything" would retry tool errors and 404s.
    return as_policy(retry, on=is_transient)


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
    policy says otherwise with its own ``on``. A call whose request may already have
    reached the server (the connection lost after sending, a gateway's 502/504) is retried
    only for a tool that is safe to repeat: named in ``idempotent_tools``, or marked
    ``readOnlyHint``/``idempotentHint`` in the tool list (the client fetches the list
    itself when it must decide and does not know it, within the time left, and keeps it
    until ``list_changed`` or a different server); otherwise it fails at once with
    ``McpConnectError``. A session the server forgot
    (HTTP 404 after a restart) is opened anew and the request re-sent: it never ran.
    Once the tool list is known, calling a tool the server does not offer raises
    ``McpUnknownToolError`` without sending anything. A tool result with ``isError`` is
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
        idempotent_tools: Iterable[str] | None = None,
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
        if isinstance(idempotent_tools, str):
            raise TypeError("idempotent_tools must be a collection of tool names, not a string")
        allow = frozenset(idempotent_tools or ())
        if not all(isinstance(t, str) for t in allow):
            raise TypeError(f"idempotent_tools must hold tool names, got {sorted(map(str, allow))}")
        self._idempotent_tools = allow
        # The server's tools by name, from the last list_tools() (None until then).
        self._tools: dict[str, mcp_types.Tool] | None = None
        # The connection the list was had on, and that server's identity (see _identity).
        self._tools_conn: Connection | None = None
        self._tools_identity: tuple[str | None, ...] | None = None
        self._learning: asyncio.Lock | None = None
        self._label = f"{name!r} at {self._target.label}" if name else self._target.label
        self._session = Session(
            self._target,
            self._label,
            protocol=protocol,
            connect_timeout=self._connect_timeout,
            policy=self._policy,
            stderr=stderr,
            on_notification=self._on_notification,
        )
        attrs: dict[str, AttributeValue] = {
            ATTR_GEN_AI_OPERATION_NAME: "execute_tool",
            ATTR_MCP_METHOD_NAME: "tools/call",
            ATTR_MCP_SERVER: self._label,
        }
        network = self._target.spec.network
        if network is not None:
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

    # --- the tool list and its annotations ------------------------------------------------

    def _on_notification(self, message: object) -> None:
        # The server's tools changed: their annotations may have too.
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._forget_tools()

    def _forget_tools(self) -> None:
        self._tools = None
        self._tools_conn = None
        self._tools_identity = None

    def _keep_tools(self, tools: list[mcp_types.Tool], conn: Connection | None) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._tools_conn = conn
        self._tools_identity = None if conn is None else _identity(conn)

    def _known_tools(self) -> dict[str, mcp_types.Tool] | None:
        """The tool list, unless the client has reconnected to another server instance."""
        conn = self._session.conn
        if self._tools is None or conn is None or conn is self._tools_conn or not conn.alive:
            return self._tools
        if _identity(conn) != self._tools_identity:
            self._forget_tools()
        else:
            self._tools_conn = conn  # the same server, restarted: the list still holds
        return self._tools

    async def _list_all(
        self, client: mcp.Client, meta: mcp_types.RequestParamsMeta | None
    ) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            # "refresh": the server is asked, never the SDK's response cache.
            page = await client.list_tools(cursor=cursor, meta=meta, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return tools

    async def _learn_tools(self) -> str | None:
        """Fetch the tool list to decide a re-send, within the call's time left.

        One ``tools/list`` (every page) at a time for all the calls that need it; it
        reconnects first when the connection was lost. Returns why it failed, or ``None``.
        """
        if self._learning is None:
            self._learning = asyncio.Lock()
        async with self._learning:
            if self._known_tools() is not None:
                return None  # another call learned it meanwhile
            # Its refused connects are retried until the deadline (a server restarting
            # comes back within the time left or not at all), by a retry budget of its
            # own: the call's is the call's, and spent by the failure that got us here.
            token = budget_var.set(None)
            try:
                tools = await run_retrying(
                    lambda: self._request("tools/list", self._list_all),
                    self._policy,
                    f"MCP tools/list on {self._label}",
                    by_time=lambda e: is_transient(e) and not maybe_sent(e),
                )
            except McpError as exc:
                return str(exc)
            finally:
                budget_var.reset(token)
            self._keep_tools(tools, self._session.conn)
            return None

    async def _reconnect(self) -> None:
        """Reconnect within the time left; a failure is the re-send's to meet (and report)."""
        token = budget_var.set(None)  # as in _learn_tools
        try:
            await run_retrying(
                self._session.live,
                self._policy,
                f"MCP connect {self._label}",
                by_time=lambda e: is_transient(e) and not maybe_sent(e),
            )
        except McpError:
            pass
        finally:
            budget_var.reset(token)

    async def _repeat_rule(self, tool: str, idempotent: bool | None) -> _Repeat:
        """Whether a call of ``tool`` whose request may have run may be sent again, and why.

        The tool's annotations decide unless the caller did; when the client does not know
        them, it learns them now (after reconnecting), within the call's time left.
        """
        if idempotent is not None:
            return _Repeat(idempotent, RESEND_CALLER)
        if tool in self._idempotent_tools:
            return _Repeat(True, RESEND_ALLOW_LIST)
        if self._tools is not None and not self.connected:
            # The list kept is only as good as the server now at the address: reconnect
            # first, so that _known_tools() can tell whether it is the same server.
            await self._reconnect()
        tools = self._known_tools()
        source = ANNOTATIONS_CACHED
        if tools is None:
            failed = await self._learn_tools()
            tools = self._known_tools()
            if tools is None:
                return _Repeat(False, RESEND_TOOL_LIST_UNKNOWN, why_unknown=failed)
            source = ANNOTATIONS_LEARNED
        known = tools.get(tool)
        hints = known.annotations if known is not None else None
        if hints is not None and hints.read_only_hint:
            return _Repeat(True, RESEND_READ_ONLY_HINT, source)
        if hints is not None and hints.idempotent_hint:
            return _Repeat(True, RESEND_IDEMPOTENT_HINT, source)
        return _Repeat(False, RESEND_NOT_IDEMPOTENT, source)

    async def _request(
        self,
        what: str,
        send: Callable[[mcp.Client, mcp_types.RequestParamsMeta | None], Awaitable[T]],
        repeat: Callable[[], Awaitable[_Repeat]] | None = None,
    ) -> T:
        """One attempt of a request: connect if needed, send with the time left, map errors.

        A session the server forgot (it restarted) is opened anew and the request re-sent
        once, at once: the server refused it unread. A request that may have reached the
        server is left to the retries only when ``repeat()`` says it is safe to run twice.
        """
        try:
            try:
                return await self._send_once(what, send)
            except _SessionLost as lost:
                _note(EVENT_MCP_SESSION_LOST, RESEND_SESSION_LOST, lost.error)
            try:
                return await self._send_once(what, send)
            except _SessionLost as again:
                # A new session refused at once too: the endpoint answers 404, whatever
                # the session; no retry can help.
                err = again.error
                err.args = (f"{err}, and again on a new session (is the URL the MCP endpoint?)",)
                raise mark_transient(err, False) from again.__cause__
        except McpError as exc:
            refused = await self._unless_repeatable(what, exc, repeat)
            if refused is exc:
                raise
            raise refused from exc

    async def _unless_repeatable(
        self, what: str, err: McpError, repeat: Callable[[], Awaitable[_Repeat]] | None
    ) -> McpError:
        if not (is_transient(err) and maybe_sent(err)):
            if is_transient(err):
                _note(EVENT_MCP_RESEND, RESEND_NOT_SENT, err)
            return err
        # Reads (tools/list) are safe to repeat; a tool call asks its rule.
        decided = _Repeat(True, RESEND_READ_ONLY_HINT) if repeat is None else await repeat()
        if decided.safe:
            _note(EVENT_MCP_RESEND, decided.rule, err, decided.annotations)
            return err
        _note(EVENT_MCP_RESEND_REFUSED, decided.rule, err, decided.annotations)
        if decided.rule == RESEND_CALLER:
            why = "was called with idempotent=False"
        elif decided.rule == RESEND_TOOL_LIST_UNKNOWN:
            why = (
                "is not known to be idempotent: the tool list could not be had "
                f"({decided.why_unknown})"
            )
        else:
            why = "is not marked idempotent"
        status = http_status(err)
        what_happened = (
            f"a gateway answered {status} after the request was sent"
            if status is not None
            else "connection lost after the request was sent"
        )
        refused = McpConnectError(
            f"{err}; {what_happened}; not retried: tool {what!r} {why}",
            server=self._label,
            tool=what,
        )
        if status is not None:
            set_http_status(refused, status)
        return mark_transient(refused, False)

    async def _send_once(
        self,
        what: str,
        send: Callable[[mcp.Client, mcp_types.RequestParamsMeta | None], Awaitable[T]],
    ) -> T:
        """One send, through the server's circuit breaker when breakers are on."""
        breaker = breaker_for(self._target.label)
        if breaker is None:
            self._session.gate = None
            return await self._send_raw(what, send)
        probe = breaker.admit(what)
        self._session.gate = lambda: breaker.check(what)
        try:
            result = await self._send_raw(what, send)
        except _SessionLost:
            breaker.success(probe)  # the server answered: it is up
            raise
        except McpError as exc:
            if is_transient(exc):
                breaker.failure(exc, probe)
            elif isinstance(exc, McpCircuitOpen):
                breaker.release(probe)
            else:
                breaker.success(probe)  # a JSON-RPC error is an answer
            raise
        except BaseException:
            breaker.release(probe)  # cancelled: no verdict (a timeout is noted by _bounded)
            raise
        breaker.success(probe)
        return result

    async def _send_raw(
        self,
        what: str,
        send: Callable[[mcp.Client, mcp_types.RequestParamsMeta | None], Awaitable[T]],
    ) -> T:
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
        spec = self._target.spec
        if spec.loses_failures:
            exchange.arm()
        # Read by the HTTP client in the context the SDK sends this request's messages in.
        token = current_exchange.set(exchange)
        try:
            try:
                left = remaining()
                meta = None
                if not math.isinf(left):
                    # Rounded up, so that the server's deadline, which starts when the
                    # request arrives, never fires before the caller's own.
                    ms = math.ceil(left * 1000)
                    meta = cast(mcp_types.RequestParamsMeta, {TIMEOUT_META_KEY: ms})
                return await send(client, meta)
            except SdkMcpError as exc:
                if exchange.session_lost or (
                    # Closed under it when another request found the session lost: only
                    # the new server was there to reach, and it refuses the old session.
                    conn.session_lost
                    and exc.code == CONNECTION_CLOSED
                    and exchange.error is None
                    and exchange.status is None
                ):
                    conn.broken = conn.session_lost = True
                    status = exchange.lost_status or 404
                    said = exchange.answer[2] if exchange.answer else exc.message
                    lost = McpConnectError(
                        f"MCP server {self._label} failed the call of tool {what!r}: the "
                        f"server no longer knows the session (HTTP {status}: {said})",
                        server=self._label,
                        tool=what,
                    )
                    set_http_status(lost, status)
                    raise _SessionLost(mark_transient(lost)) from exc
                err = call_error(exc, exchange, self._label, what, conn.lost())
                if _never_left(spec, exchange):
                    mark_sent(err, False)
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
                lost_conn = SdkMcpError(code=CONNECTION_CLOSED, message="the transport failed")
                if exchange.session_lost:
                    raise _SessionLost(
                        mark_transient(
                            McpConnectError(
                                f"MCP server {self._label} failed the call of tool {what!r}: "
                                "the server no longer knows the session (HTTP 404)",
                                server=self._label,
                                tool=what,
                            )
                        )
                    ) from exchange.error
                err = call_error(lost_conn, exchange, self._label, what)
                if _never_left(spec, exchange):
                    mark_sent(err, False)
                raise err from exchange.error
            except (ValidationError, RuntimeError) as exc:
                raise McpError(
                    f"MCP server {self._label} answered {what!r} with something the SDK "
                    f"rejects: {exc}",
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
                breaker = breaker_for(self._target.label)
                if breaker is not None:
                    breaker.failure(exc, probe=breaker.state == BREAKER_HALF_OPEN)
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
        idempotent: bool | None = None,
        idle_timeout: float | None = None,
    ) -> mcp_types.CallToolResult:
        """Call tool ``name``; ends within ``min(timeout, remaining deadline)``.

        Returns the SDK's ``CallToolResult``. Raises ``DeadlineExceeded`` when the time
        ran out (the request is cancelled on the wire), ``McpConnectError`` when the
        server cannot be reached or answers at the HTTP level, ``McpCallError`` for a
        JSON-RPC error, ``McpToolError`` for an ``isError`` result when ``raise_on_error``
        (default: the client's), ``McpUnknownToolError`` (before sending) for a tool the
        known tool list lacks. ``idempotent`` says whether the call may run twice, over
        the client's ``idempotent_tools`` and the tool's annotations (see the class).

        ``idle_timeout`` makes the timeout progress-aware: the call may run as long as
        ``timeout`` and the deadline allow while the server's progress notifications
        keep coming less than ``idle_timeout`` seconds apart; a silence longer than that
        ends it with ``DeadlineExceeded`` (``deadline_name="idle_timeout"``)::

            result = await client.call_tool("search", {"query": q}, timeout=10)
            report = await client.call_tool("crawl", timeout=600, idle_timeout=30)
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty tool name, got {name!r}")
        if arguments is not None and not isinstance(arguments, Mapping):
            raise TypeError(f"arguments must be a mapping or None, got {arguments!r}")
        budget = self._call_budget(timeout)
        raise_ = self._raise_on_error if raise_on_error is None else bool(raise_on_error)
        args = None if arguments is None else dict(arguments)
        if idempotent is not None and not isinstance(idempotent, bool):
            raise TypeError(f"idempotent must be True, False or None, got {idempotent!r}")
        watch: IdleWatch | None = None
        progress: Any = None
        if idle_timeout is not None:
            idle = check_timeout(idle_timeout, "idle_timeout")
            if idle == 0:
                raise ValueError("idle_timeout must be > 0 (None: no idle limit)")
            if not math.isinf(idle):
                watch = IdleWatch(idle, f"MCP call of {name!r} on {self._label}")
                progress = watch.progress

        async def attempt() -> mcp_types.CallToolResult:
            tools = self._known_tools()
            if tools is not None and name not in tools:
                offered = sorted(tools)
                raise McpUnknownToolError(
                    f"MCP server {self._label} offers no tool {name!r} (it offers {offered})",
                    offered=offered,
                    server=self._label,
                    tool=name,
                )
            if watch is not None:
                watch.restart()
            result = await self._request(
                name,
                lambda client, meta: client.call_tool(
                    name, args, progress_callback=progress, meta=meta
                ),
                lambda: self._repeat_rule(name, idempotent),
            )
            if result.is_error and raise_:
                raise tool_error(result, self._label, name)
            return result

        async def bounded() -> mcp_types.CallToolResult:
            if watch is None:
                return await self._bounded(name, budget, attempt)
            with watch:
                return await self._bounded(name, budget, attempt)

        # In `hangguard ps` and the live snapshots while it runs (under this call's span).
        bounded = _inflight.registered(_inflight.MCP, f"{self._label} {name}", bounded)
        tracer = get_tracer()
        if tracer is None:
            started = time.monotonic()
            try:
                result = await bounded()
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
                with contained():
                    span.set_attribute(
                        ATTR_GEN_AI_TOOL_CALL_ARGUMENTS, captured(args or {}, self._capture_limit)
                    )
            try:
                result = await bounded()
            except asyncio.CancelledError as exc:
                CancelRecord.of_cancelled(exc).write(span, on_span=False)
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
                with contained():
                    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
                    span.set_attribute(
                        ATTR_GEN_AI_TOOL_CALL_RESULT, captured(dumped, self._capture_limit)
                    )
            _record_duration(started, name, ERROR_TYPE_TOOL_ERROR if result.is_error else None)
            return result

    async def list_tools(self, *, timeout: float | None = None) -> list[mcp_types.Tool]:
        """All the server's tools (every page), within ``timeout`` and the deadline.

        The client keeps the list: from then on it knows which tools are safe to re-send
        and which names the server does not offer. The same errors as :meth:`call_tool`,
        and transient failures are retried::

            names = [tool.name for tool in await client.list_tools()]
        """
        budget = self._call_budget(timeout)

        tools = await self._bounded(
            "tools/list", budget, lambda: self._request("tools/list", self._list_all)
        )
        self._keep_tools(tools, self._session.conn)
        return tools

    @property
    def tools(self) -> list[mcp_types.Tool] | None:
        """The tool list the client knows (``None`` before the first :meth:`list_tools`).

        Also filled when the client fetched it itself to decide whether a failed call may be
        sent again; emptied when the server says its tools changed (``list_changed``) or the
        client reconnected to a different server.
        """
        tools = self._known_tools()
        return None if tools is None else list(tools.values())
