"""How failures seen through the mcp SDK become hangguard's exceptions.

The SDK reports one failure in many shapes: an HTTP 503 and a 502 both as JSON-RPC
``-32603``, a refused connection as an ``ExceptionGroup`` nested three deep, a lost
connection as ``-32000``. Here each becomes exactly one of ``McpConnectError``,
``McpCallError`` or ``McpToolError`` with a message naming the server and the tool,
the real cause chained, and a note of whether trying again could help.

Transient (worth retrying): connection refused or reset, the connection lost mid-call,
HTTP 502/503/504, a connect attempt that timed out. Not transient: DNS failures, 404,
a wrong content type, JSON-RPC errors, tool errors.

A transient failure of a call is also marked with whether the request may have reached
the server (:func:`maybe_sent`): a refused connection or a 503 says it did not, a
connection lost after sending or a gateway's 502/504 cannot say. The client re-sends
the latter only for a tool that is safe to repeat.
"""

from __future__ import annotations

import http
import socket
from typing import Any, Final, TypeVar

import anyio
import httpx2
from mcp.shared.exceptions import MCPError as SdkMcpError
from mcp_types import CONNECTION_CLOSED

from .._exceptions import DeadlineExceeded, McpCallError, McpConnectError, McpError, McpToolError
from .._semconv import ERROR_TYPE_TIMEOUT, ERROR_TYPE_TOOL_ERROR
from .._spans import error_type
from ._http import Exchange

__all__ = [
    "TRANSIENT_STATUSES",
    "call_error",
    "connect_error",
    "describe",
    "http_status",
    "is_transient",
    "leaves",
    "mark_sent",
    "mark_transient",
    "maybe_sent",
    "root_cause",
    "set_http_status",
    "span_error_type",
]

TRANSIENT_STATUSES: Final = frozenset({502, 503, 504})
_TRANSIENT: Final = "_hangguard_transient"
_STATUS: Final = "_hangguard_http_status"
_SENT: Final = "_hangguard_maybe_sent"
# Statuses that say the server did not process the request (RFC 9110 15.6.4, 6585 4).
_NOT_PROCESSED: Final = frozenset({429, 503})

E = TypeVar("E", bound=BaseException)


def mark_transient(exc: E, transient: bool = True) -> E:
    setattr(exc, _TRANSIENT, transient)
    return exc


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help (the retry predicate ``McpClient`` uses by default)."""
    return bool(getattr(exc, _TRANSIENT, False))


def mark_sent(exc: E, sent: bool = True) -> E:
    setattr(exc, _SENT, sent)
    return exc


def maybe_sent(exc: BaseException) -> bool:
    """Whether the request of a failed call may have reached the server (and run there)."""
    return bool(getattr(exc, _SENT, False))


def set_http_status(exc: E, status: int) -> E:
    setattr(exc, _STATUS, status)
    return exc


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an ``McpConnectError``, when there was one."""
    status = getattr(exc, _STATUS, None)
    return status if isinstance(status, int) else None


def span_error_type(exc: BaseException) -> str:
    """``error.type`` of the ``execute_tool`` span for ``exc``."""
    if isinstance(exc, DeadlineExceeded):
        return ERROR_TYPE_TIMEOUT
    if isinstance(exc, McpToolError):
        return ERROR_TYPE_TOOL_ERROR
    if isinstance(exc, McpCallError):
        return str(exc.code)
    status = http_status(exc)
    return str(status) if status is not None else error_type(exc)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(leaves(inner))
        return out
    return [exc]


def _rank(exc: BaseException) -> int:
    # The most telling cause first: what the server said, then what the network did.
    if isinstance(exc, (httpx2.HTTPStatusError, httpx2.SSEError)):
        return 0
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return 1
    if isinstance(exc, SdkMcpError):
        return 2
    if isinstance(exc, Exception):
        return 3
    return 4  # cancellation: only when there is nothing else


def root_cause(exc: BaseException) -> BaseException:
    """The one exception that best explains ``exc`` (which may be a nested group)."""
    return min(leaves(exc), key=_rank)


def _status_reason(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    hint = " (is the URL the server's MCP endpoint?)" if status in (404, 405) else ""
    return f"HTTP {status} {phrase}".rstrip() + hint


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> tuple[str, bool]:
    """A short reason for a transport-level failure, and whether it is transient."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return _status_reason(status), status in TRANSIENT_STATUSES
    if isinstance(exc, httpx2.SSEError):
        return f"the response is not an event stream: {text}", False
    if isinstance(exc, httpx2.ConnectTimeout):
        return "the TCP connect timed out", True
    if isinstance(exc, httpx2.ConnectError):
        if _caused_by(exc, socket.gaierror):
            return f"the host name does not resolve: {text}", False
        return f"cannot connect (refused or unreachable): {text}", True
    if isinstance(exc, (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError)):
        return f"the connection was reset or lost: {text}", True
    if isinstance(exc, httpx2.TimeoutException):
        return f"an HTTP timeout: {text}", True
    if isinstance(exc, (ConnectionError, anyio.BrokenResourceError, anyio.EndOfStream)):
        return f"the connection was closed: {text}", True
    if isinstance(exc, anyio.ClosedResourceError):
        return "the connection was closed", True
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found: {text}", False
    return f"{type(exc).__name__}: {text}", False


def _from_exchange(exchange: Exchange) -> tuple[str, bool, int | None] | None:
    if exchange.status is not None:
        status = exchange.status
        if status < 400:
            ctype = exchange.content_type or "(none)"
            return (
                f"the server answered with content type {ctype!r}, not JSON-RPC "
                "(application/json or text/event-stream); is the URL the MCP endpoint?",
                False,
                None,
            )
        return _status_reason(status), status in TRANSIENT_STATUSES, status
    if exchange.error is not None:
        reason, transient = describe(exchange.error)
        return reason, transient, None
    return None


def _connect(message: str, server: str, transient: bool, status: int | None) -> McpConnectError:
    err = mark_transient(McpConnectError(message, server=server), transient)
    if status is not None:
        set_http_status(err, status)
    return err


def connect_error(exc: BaseException, exchange: Exchange, server: str) -> McpError:
    """The error for a failed connect (transport setup and handshake)."""
    seen = _from_exchange(exchange)
    cause = root_cause(exc)
    if seen is not None:
        reason, transient, status = seen
    elif isinstance(cause, SdkMcpError):
        status = None
        if cause.code == CONNECTION_CLOSED:
            reason, transient = "the server closed the connection during the handshake", True
        else:
            reason = f"the handshake failed with JSON-RPC error {cause.code}: {cause.message}"
            transient = False
    else:
        status = None
        reason, transient = describe(cause)
    return _connect(f"cannot connect to MCP server {server}: {reason}", server, transient, status)


def call_error(
    exc: SdkMcpError,
    exchange: Exchange,
    server: str,
    tool: str,
    lost: BaseException | None = None,
) -> McpError:
    """The error for a call the SDK failed with ``exc``.

    ``lost`` is why the connection ended, when it did during the call.
    """
    seen = _from_exchange(exchange)
    where = f"MCP server {server} failed the call of tool {tool!r}"
    if seen is not None:
        reason, transient, status = seen
        err = _connect(f"{where}: {reason}", server, transient, status)
        err.tool = tool
        if status is not None:
            sent = status not in _NOT_PROCESSED
        else:
            # A failed TCP connect is the one transport error that proves nothing was sent.
            sent = not isinstance(exchange.error, (httpx2.ConnectError, httpx2.ConnectTimeout))
        return mark_sent(err, sent)
    if exc.code == CONNECTION_CLOSED:
        reason = describe(root_cause(lost))[0] if lost is not None else exc.message
        err = _connect(f"{where}: the connection was lost ({reason})", server, True, None)
        err.tool = tool
        return mark_sent(err)
    if exchange.answer is not None:
        # An HTTP error with a JSON body: the SDK passes the body's JSON-RPC error on, or,
        # when the body is not quite JSON-RPC, a stand-in of its own; either way the
        # status and the server's words are what the caller needs.
        status, code, said = exchange.answer
        code = exc.code if code is None else code
        answered = McpCallError(
            f"{where}: HTTP {status}, JSON-RPC error {code}: {said}",
            code=code,
            server=server,
            tool=tool,
        )
        return set_http_status(answered, status)
    return McpCallError(
        f"{where}: JSON-RPC error {exc.code}: {exc.message}",
        code=exc.code,
        server=server,
        tool=tool,
    )


def tool_error(result: Any, server: str, tool: str) -> McpToolError:
    """The error for a tool result with ``isError`` set, when the caller asked to raise."""
    texts = [getattr(block, "text", None) for block in getattr(result, "content", None) or []]
    detail = "; ".join(t for t in texts if isinstance(t, str)) or "(no text)"
    if len(detail) > 500:
        detail = detail[:500] + "..."
    return McpToolError(
        f"tool {tool!r} on MCP server {server} reported an error: {detail}",
        result=result,
        server=server,
        tool=tool,
    )
