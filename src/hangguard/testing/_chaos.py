"""A chaos MCP server: a real ``MCPServer`` with misbehaving tools and HTTP-level faults.

Point an op at it to see what it does when the server hangs, fails, lies about its
content type or disappears. Everything listens on 127.0.0.1 on a free port. It runs in
a thread of the current process (:class:`ChaosServer`), as a subprocess
(``python -m hangguard.testing.chaos``) or over stdio (``--transport stdio``).

Tools: ``echo``, ``sleep``, ``hang``, ``raise`` (a JSON-RPC error), ``is_error`` (a result
with ``isError``), ``flaky`` (fails its first N calls, then succeeds) and
``deadline_info`` (what budget the handler got). Every call is recorded as
:class:`ChaosEvent` objects, so a test can wait until a handler started or see that it
was cancelled. Transport faults are an :class:`HttpFault` (never answer, ``text/html``,
an HTTP status, close mid-response), optionally only for some JSON-RPC methods or only
for the first N matching requests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TextIO, get_args

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._deadline import remaining
from .._mcp_server import TIMEOUT_META_KEY, DeadlineMiddleware

__all__ = [
    "Blackhole",
    "ChaosEvent",
    "ChaosRecorder",
    "ChaosServer",
    "FaultKind",
    "HttpFault",
    "build_chaos_server",
    "closed_port_url",
    "main",
    "stdio_command",
]

logger = logging.getLogger("hangguard.testing.chaos")

FaultKind = Literal["never_answer", "html", "status", "close_mid_response"]
_FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
Transport = Literal["streamable-http", "sse"]

#: The pseudo-method an :class:`HttpFault` uses to match HTTP GETs (SSE streams).
GET: str = "GET"


@dataclass(frozen=True, slots=True)
class HttpFault:
    """What the chaos server does to matching HTTP requests instead of answering.

    ``kind``: ``never_answer`` (read the request, then wait until the client goes away),
    ``html`` (200 with ``text/html``), ``status`` (``status`` with a plain-text body, no
    JSON-RPC) or ``close_mid_response`` (start an event stream, then drop the connection).
    ``methods``: the JSON-RPC methods it hits (``"GET"`` for HTTP GETs); ``None`` means
    every request (notifications are never faulted). ``first``: only the first N matching
    requests, then the server behaves (``HttpFault("status", status=503, first=2)`` is
    503-then-ok)::

        chaos.fault = HttpFault("never_answer", methods={"tools/call"})
    """

    kind: FaultKind
    status: int = 503
    methods: frozenset[str] | None = None
    first: int | None = None

    def __init__(
        self,
        kind: FaultKind,
        *,
        status: int = 503,
        methods: Iterable[str] | None = None,
        first: int | None = None,
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

    def matches(self, method: str) -> bool:
        """Whether a request for ``method`` (or ``"GET"``) is hit by this fault."""
        return self.methods is None or method in self.methods


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    """One thing that happened in the chaos server.

    ``kind`` is ``started``, ``finished``, ``cancelled`` or ``failed`` for a tool call
    (``tool`` is the tool name) and ``fault`` for a faulted request (``tool`` is the
    JSON-RPC method, or ``GET``). ``at`` is ``time.monotonic()``.
    """

    kind: str
    tool: str
    detail: Mapping[str, object] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, "tool": self.tool, **self.detail}, default=str)


class ChaosRecorder:
    """Thread-safe log of :class:`ChaosEvent` objects that tests can wait on.

    Recording costs the same however long the log is (benchmarks record thousands).
    """

    def __init__(self, on_event: Callable[[ChaosEvent], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._events: list[ChaosEvent] = []
        # Counts per (kind, tool) and per (kind, None) for "any tool".
        self._counts: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self._waiters: list[
            tuple[
                tuple[str, str | None], int, asyncio.AbstractEventLoop, asyncio.Future[ChaosEvent]
            ]
        ] = []
        self._on_event = on_event

    @property
    def events(self) -> list[ChaosEvent]:
        """A snapshot of every event so far."""
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self._counts.clear()

    def count(self, kind: str, tool: str | None = None) -> int:
        """How many ``kind`` events (of ``tool``, when given) were recorded."""
        with self._lock:
            return self._counts[(kind, tool)]

    def record(self, kind: str, tool: str, /, **detail: object) -> ChaosEvent:
        event = ChaosEvent(kind, tool, detail)
        with self._lock:
            self._events.append(event)
            self._counts[(kind, tool)] += 1
            self._counts[(kind, None)] += 1
            due = [w for w in self._waiters if self._counts[w[0]] >= w[1]]
            for waiter in due:
                self._waiters.remove(waiter)
        for _, _, loop, future in due:
            loop.call_soon_threadsafe(_resolve, future, event)
        if self._on_event is not None:
            self._on_event(event)
        return event

    async def wait_for(
        self, kind: str, tool: str | None = None, *, count: int = 1, timeout: float = 10.0
    ) -> ChaosEvent:
        """Wait until ``count`` events of ``kind`` (for ``tool``) exist; return the last.

        ``timeout`` is a safety net for a broken test, not a way to pace one.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ChaosEvent] = loop.create_future()
        key = (kind, tool)
        with self._lock:
            if self._counts[key] >= count:
                matching = [e for e in self._events if _match(e, kind, tool)]
                return matching[count - 1]
            waiter = (key, count, loop, future)
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(
                f"no {count} {kind!r} event(s) for tool {tool!r} within {timeout}s; "
                f"events so far: {[(e.kind, e.tool) for e in self.events]}"
            ) from None
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def _match(event: ChaosEvent, kind: str, tool: str | None) -> bool:
    return event.kind == kind and (tool is None or event.tool == tool)


def _resolve(future: asyncio.Future[ChaosEvent], event: ChaosEvent) -> None:
    if not future.done():
        future.set_result(event)


@contextlib.asynccontextmanager
async def _track(recorder: ChaosRecorder, tool: str, **detail: object) -> AsyncIterator[None]:
    recorder.record("started", tool, **detail)
    try:
        yield
    except asyncio.CancelledError:
        recorder.record("cancelled", tool, **detail)
        raise
    except BaseException as exc:
        recorder.record("failed", tool, error=repr(exc), **detail)
        raise
    recorder.record("finished", tool, **detail)


def build_chaos_server(
    recorder: ChaosRecorder | None = None,
    *,
    max_timeout: float | None = None,
    deadline_middleware: bool = True,
    name: str = "hangguard-chaos",
) -> MCPServer[Any]:
    """The chaos ``MCPServer`` with its tools, not yet served on any transport.

    With ``deadline_middleware`` it enforces the caller's ``hangguard/timeout-ms``,
    capped by ``max_timeout``.
    """
    recorder = recorder if recorder is not None else ChaosRecorder()
    middleware = [DeadlineMiddleware(max_timeout)] if deadline_middleware else []
    with _quiet_sdk_logging_setup():
        server: MCPServer[Any] = MCPServer(name, middleware=middleware)
    flaky_calls: dict[str, int] = {}
    flaky_lock = threading.Lock()

    @server.tool(description="Return the text it was given.")
    async def echo(text: str = "") -> str:
        async with _track(recorder, "echo"):
            return text

    @server.tool(description="Sleep for the given seconds, then answer.")
    async def sleep(seconds: float) -> str:
        async with _track(recorder, "sleep", seconds=seconds):
            await asyncio.sleep(seconds)
            return f"slept {seconds:g}s"

    @server.tool(description="Never answer (until cancelled).")
    async def hang() -> str:
        async with _track(recorder, "hang"):
            await asyncio.Event().wait()
        raise AssertionError("unreachable")

    @server.tool(name="raise", description="Fail with a JSON-RPC error of the given code.")
    async def raise_(message: str = "chaos: raised", code: int = INTERNAL_ERROR) -> str:
        async with _track(recorder, "raise", code=code):
            raise MCPError(code=code, message=message)

    @server.tool(description="Answer with a tool result that has isError set.")
    async def is_error(message: str = "chaos: the tool failed") -> str:
        async with _track(recorder, "is_error"):
            raise ToolError(message)

    @server.tool(
        description=(
            "Fail the first `failures` calls with this key (mode: error = isError result, "
            "raise = JSON-RPC error, hang = never answer), then succeed."
        )
    )
    async def flaky(
        key: str = "default",
        failures: int = 1,
        mode: Literal["error", "raise", "hang"] = "error",
    ) -> str:
        with flaky_lock:
            flaky_calls[key] = n = flaky_calls.get(key, 0) + 1
        async with _track(recorder, "flaky", key=key, call=n):
            if n <= failures:
                if mode == "hang":
                    await asyncio.Event().wait()
                if mode == "raise":
                    raise MCPError(code=INTERNAL_ERROR, message=f"chaos: flaky call {n} failed")
                raise ToolError(f"chaos: flaky call {n} failed")
            return f"ok after {n - 1} failure(s)"

    @server.tool(description="Report the deadline the handler runs under.")
    async def deadline_info(ctx: Context) -> dict[str, Any]:
        async with _track(recorder, "deadline_info"):
            left = remaining()
            meta = ctx.request_context.meta or {}
            return {
                "remaining_s": None if math.isinf(left) else left,
                "timeout_ms": meta.get(TIMEOUT_META_KEY),
            }

    return server


@contextlib.contextmanager
def _quiet_sdk_logging_setup() -> Any:
    # MCPServer() calls logging.basicConfig(), which would install a handler on the
    # root logger of the host process; a test utility must leave logging alone.
    root = logging.getLogger()
    guard = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(guard)
    try:
        yield
    finally:
        if added:
            root.removeHandler(guard)


class _AbortConnection(Exception):
    """Raised inside the ASGI app so that the server drops the connection."""


class _FaultApp:
    """ASGI wrapper applying the owner's current :class:`HttpFault` to matching requests."""

    def __init__(self, app: ASGIApp, owner: ChaosServer) -> None:
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
    if isinstance(message, dict) and "id" in message and isinstance(message.get("method"), str):
        return str(message["method"])
    return None


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


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


def _listen(host: str, port: int) -> socket.socket:
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


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChaosServer:
    """The chaos MCP server over HTTP (streamable HTTP or SSE), in a background thread.

    Use it as a context manager (sync or async); ``url`` is what a client connects to::

        async with ChaosServer() as chaos:
            async with hangguard.McpClient(chaos.url, timeout=1) as client:
                await client.call_tool("hang")          # DeadlineExceeded after 1 s
            await chaos.wait_for("cancelled", "hang")   # the handler was cancelled too

    ``fault`` may be changed while it runs; the ``first`` count starts anew each time.
    ``json_response``/``stateless`` select those modes of the SDK's streamable HTTP app.
    """

    def __init__(
        self,
        *,
        transport: Transport = "streamable-http",
        fault: HttpFault | None = None,
        json_response: bool = False,
        stateless: bool = False,
        max_timeout: float | None = None,
        deadline_middleware: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        recorder: ChaosRecorder | None = None,
    ) -> None:
        if transport not in ("streamable-http", "sse"):
            raise ValueError(f"transport must be 'streamable-http' or 'sse', got {transport!r}")
        self.transport: Transport = transport
        self.fault = fault
        self.recorder = recorder if recorder is not None else ChaosRecorder()
        self.mcp = build_chaos_server(
            self.recorder, max_timeout=max_timeout, deadline_middleware=deadline_middleware
        )
        if transport == "sse":
            app: ASGIApp = self.mcp.sse_app(host=host)
            self._path = "/sse"
        else:
            app = self.mcp.streamable_http_app(
                json_response=json_response, stateless_http=stateless, host=host
            )
            self._path = "/mcp"
        self._app = _FaultApp(app, self)
        self._host = host
        self._sock = _listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._ready = threading.Event()
        self._server = _Uvicorn(
            uvicorn.Config(
                self._app,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=1,
                timeout_keep_alive=5,
            ),
            self._ready,
        )
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        """The endpoint URL (``.../mcp`` for streamable HTTP, ``.../sse`` for SSE)."""
        return f"http://{_authority(self._host, self.port)}{self._path}"

    @property
    def events(self) -> list[ChaosEvent]:
        return self.recorder.events

    async def wait_for(
        self, kind: str, tool: str | None = None, *, count: int = 1, timeout: float = 10.0
    ) -> ChaosEvent:
        """See :meth:`ChaosRecorder.wait_for`."""
        return await self.recorder.wait_for(kind, tool, count=count, timeout=timeout)

    def start(self) -> ChaosServer:
        """Serve in a daemon thread; returns once the app has started (or raises)."""
        if self._thread is not None:
            raise RuntimeError("ChaosServer.start() called twice")
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"hangguard-chaos-{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(30) or not self._server.started:
            self.stop()
            raise RuntimeError(f"the chaos server on {self.url} did not start")
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM (what the CLI does)."""
        self._server.run(sockets=[self._sock])

    def stop(self) -> None:
        """Stop serving and join the thread (bounded by the graceful-shutdown timeout)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> ChaosServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ChaosServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


class Blackhole:
    """A TCP port that accepts connections and never says a word (a dead proxy, a DROP).

    The kernel completes the handshake for queued connections, so a client connects,
    sends its request and waits forever::

        with Blackhole() as hole:
            async with hangguard.McpClient(hole.url, connect_timeout=1): ...  # McpConnectError
    """

    def __init__(self, host: str = "127.0.0.1", path: str = "/mcp") -> None:
        self._host = host
        self._path = path
        self._sock = _listen(host, 0)
        self.port: int = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{_authority(self._host, self.port)}{self._path}"

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
    """A URL on a port where nothing listens (connection refused)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{_authority(host, port)}{path}"


def stdio_command(*args: str) -> list[str]:
    """The command line that runs the chaos server over stdio with extra CLI ``args``.

    ``stdio_command("--fault", "never_answer")`` is a server that reads its stdin and
    never answers, ignoring SIGTERM and the end of its input.
    """
    return [sys.executable, "-m", "hangguard.testing.chaos", "--transport", "stdio", *args]


def _stdio_never_answer() -> None:
    # The worst stdio server: it ignores polite shutdown (SIGTERM, stdin closing)
    # and only SIGKILL ends it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in sys.stdin.buffer:
        pass
    threading.Event().wait()


def _announcer(stream: TextIO) -> Callable[[ChaosEvent], None]:
    lock = threading.Lock()

    def announce(event: ChaosEvent) -> None:
        with lock:
            stream.write(event.to_json() + "\n")
            stream.flush()

    return announce


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m hangguard.testing.chaos",
        description="A chaos MCP server for testing clients against hangs and failures.",
        epilog=(
            "tools: echo(text), sleep(seconds), hang(), raise(message, code) (a JSON-RPC "
            "error), is_error(message) (an isError result), flaky(key, failures, mode) (fails "
            "the first calls, then answers), deadline_info() (the budget the handler got). "
            'Over HTTP it first prints {"event": "listening", "url": ...} on stdout.'
        ),
    )
    parser.add_argument(
        "--transport",
        choices=["streamable-http", "sse", "stdio"],
        default="streamable-http",
        help="how clients connect (default: streamable-http, at /mcp; sse at /sse)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--fault",
        choices=[*sorted(k.replace("_", "-") for k in _FAULT_KINDS), "none"],
        default="none",
        help="transport fault (with stdio only never-answer applies)",
    )
    parser.add_argument("--status", type=int, default=503, help="HTTP status of --fault status")
    parser.add_argument(
        "--fault-method",
        action="append",
        dest="fault_methods",
        metavar="METHOD",
        help="fault only these JSON-RPC methods (repeatable; GET for SSE streams)",
    )
    parser.add_argument(
        "--fault-first",
        type=int,
        default=None,
        metavar="N",
        help="fault only the first N matching requests",
    )
    parser.add_argument(
        "--json-response",
        action="store_true",
        help="answer streamable HTTP requests with JSON instead of an event stream",
    )
    parser.add_argument("--stateless", action="store_true", help="streamable HTTP without sessions")
    parser.add_argument(
        "--max-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cap on any request's budget (DeadlineMiddleware)",
    )
    parser.add_argument(
        "--no-deadline-middleware",
        action="store_true",
        help="ignore the caller's hangguard/timeout-ms (to see a server without it)",
    )
    parser.add_argument(
        "--announce",
        action="store_true",
        help="print each tool event as a JSON line (stderr with stdio)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the chaos server from the command line; returns the exit status.

    Over HTTP it prints ``{"event": "listening", "url": ...}`` on stdout first, so a
    parent process learns the port it got.
    """
    args = _parser(prog).parse_args(argv)
    fault_kind = args.fault.replace("-", "_")
    if args.transport == "stdio":
        if fault_kind == "never_answer":
            _stdio_never_answer()
            return 0
        if fault_kind != "none":
            raise SystemExit(f"--fault {args.fault} does not apply to --transport stdio")
        recorder = ChaosRecorder(_announcer(sys.stderr) if args.announce else None)
        server = build_chaos_server(
            recorder,
            max_timeout=args.max_timeout,
            deadline_middleware=not args.no_deadline_middleware,
        )
        asyncio.run(server.run_stdio_async())
        return 0
    fault = None
    if fault_kind != "none":
        fault = HttpFault(
            fault_kind,
            status=args.status,
            methods=args.fault_methods,
            first=args.fault_first,
        )
    chaos = ChaosServer(
        transport=args.transport,
        fault=fault,
        json_response=args.json_response,
        stateless=args.stateless,
        max_timeout=args.max_timeout,
        deadline_middleware=not args.no_deadline_middleware,
        host=args.host,
        port=args.port,
        recorder=ChaosRecorder(_announcer(sys.stdout) if args.announce else None),
    )
    print(json.dumps({"event": "listening", "url": chaos.url}), flush=True)
    chaos.serve_forever()
    return 0
