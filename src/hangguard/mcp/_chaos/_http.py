"""The chaos server's HTTP faults, and ports that misbehave below HTTP.

:class:`HttpFault` says what to do instead of answering; :class:`FaultApp` is the ASGI
wrapper that does it to matching requests. :class:`Blackhole` accepts connections and
never answers; :func:`closed_port_url` refuses them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, get_args

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._tools import ChaosRecorder

__all__ = [
    "GET",
    "Blackhole",
    "FaultApp",
    "FaultKind",
    "FaultSource",
    "HttpFault",
    "authority",
    "closed_port_url",
    "listen_socket",
]

FaultKind = Literal["never_answer", "html", "status", "close_mid_response"]
_FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

#: The pseudo-method an :class:`HttpFault` uses to match HTTP GETs (SSE streams).
GET: str = "GET"


@dataclass(frozen=True, slots=True)
class HttpFault:
    """What the chaos server does to matching HTTP requests instead of answering.

    ``kind``: ``never_answer`` (read the request, then wait until the client goes away),
    ``html`` (200 with ``text/html``), ``status`` (``status`` with a plain-text body, no
    JSON-RPC; with ``message``, a JSON-RPC error ``-32000`` of that message and no ``id``,
    as the TypeScript SDK's servers answer) or ``close_mid_response`` (start an event
    stream, then drop the connection).
    ``methods``: the JSON-RPC methods it hits (``"GET"`` for HTTP GETs); ``None`` means
    every request and GET, but notifications only when named (``notifications/cancelled``).
    ``first``: only the first N matching messages, then the server behaves
    (``HttpFault("status", status=503, first=2)`` is 503-then-ok)::

        chaos.fault = HttpFault("never_answer", methods={"tools/call"})
    """

    kind: FaultKind
    status: int = 503
    methods: frozenset[str] | None = None
    first: int | None = None
    message: str | None = None

    def __init__(
        self,
        kind: FaultKind,
        *,
        status: int = 503,
        methods: Iterable[str] | None = None,
        first: int | None = None,
        message: str | None = None,
    ) -> None:
        if kind not in _FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(_FAULT_KINDS)}, got {kind!r}")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        if first is not None and (
            isinstance(first, bool) or not isinstance(first, int) or first < 1
        ):
            raise ValueError(f"first must be a whole number >= 1 or None, got {first!r}")
        if isinstance(methods, str):
            raise TypeError("methods must be a collection of method names, not a string")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "methods", None if methods is None else frozenset(methods))
        object.__setattr__(self, "first", first)
        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a string or None, got {message!r}")
        object.__setattr__(self, "message", message)

    def matches(self, method: str) -> bool:
        """Whether a message of ``method`` (or ``"GET"``) is hit by this fault."""
        if self.methods is None:
            return not method.startswith("notifications/")
        return method in self.methods


class _AbortConnection(Exception):
    """Raised inside the ASGI app so that the server drops the connection."""


class FaultSource(Protocol):
    """Where :class:`FaultApp` reads the current fault and records what it did."""

    @property
    def fault(self) -> HttpFault | None: ...

    @property
    def recorder(self) -> ChaosRecorder: ...


class FaultApp:
    """ASGI wrapper applying the owner's current :class:`HttpFault` to matching requests."""

    def __init__(self, app: ASGIApp, owner: FaultSource) -> None:
        self.app = app
        self.owner = owner
        self._seen = 0
        self._fault: HttpFault | None = None
        self._lock = threading.Lock()

    def _take(self, fault: HttpFault, method: str) -> bool:
        with self._lock:
            if fault is not self._fault:
                self._fault, self._seen = fault, 0
            if not fault.matches(method):
                return False
            if fault.first is not None and self._seen >= fault.first:
                return False
            self._seen += 1
            return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.owner.fault
        if fault is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        if scope["method"] == "GET":
            method: str | None = GET
        elif scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                buffered.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            method = _request_method(body)
        else:
            method = None
        if method is None or not self._take(fault, method):
            await self.app(scope, _replay(buffered, receive), send)
            return
        self.owner.recorder.record("fault", method, fault=fault.kind, status=fault.status)
        await _apply(fault, receive, send)


def _request_method(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("method"), str):
        return str(message["method"])
    return None  # a response to a server's request, or not JSON-RPC


def _replay(buffered: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if buffered:
            return buffered.pop(0)
        return await receive()

    return replayed


async def _apply(fault: HttpFault, receive: Receive, send: Send) -> None:
    if fault.kind == "never_answer":
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    if fault.kind == "close_mid_response":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b'event: message\ndata: {"jsonrpc": "2.0", "id": ',
                "more_body": True,
            }
        )
        raise _AbortConnection("chaos: connection dropped mid-response")
    if fault.kind == "html":
        status, content_type = 200, b"text/html; charset=utf-8"
        body = b"<html><body><h1>Welcome to the proxy login page</h1></body></html>"
    elif fault.message is not None:
        status, content_type = fault.status, b"application/json; charset=utf-8"
        error = {"code": -32000, "message": fault.message}
        body = json.dumps({"jsonrpc": "2.0", "error": error}).encode()
    else:
        status, content_type = fault.status, b"text/plain; charset=utf-8"
        body = f"chaos: HTTP {fault.status}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def listen_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP, and without it every response stalls ~40 ms on Nagle + delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Blackhole:
    """A TCP port that accepts connections and never says a word (a dead proxy, a DROP).

    The kernel completes the handshake for queued connections, so a client connects,
    sends its request and waits forever::

        with Blackhole() as hole:
            async with hangguard.mcp.McpClient(hole.url, connect_timeout=1): ...  # McpConnectError
    """

    def __init__(self, host: str = "127.0.0.1", path: str = "/mcp") -> None:
        self._host = host
        self._path = path
        self._sock = listen_socket(host, 0)
        self.port: int = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{authority(self._host, self.port)}{self._path}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def closed_port_url(host: str = "127.0.0.1", path: str = "/mcp") -> str:
    """A URL on a port where nothing listens (connection refused).

    The port was free a moment ago (another program could take it since, but rarely does)::

        hangguard.mcp.McpClient(closed_port_url())  # connecting raises McpConnectError
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{authority(host, port)}{path}"
