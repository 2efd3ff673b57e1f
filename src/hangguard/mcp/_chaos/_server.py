"""A chaos MCP server: a real ``MCPServer`` with misbehaving tools and HTTP-level faults.

Point an op at it to see what it does when the server hangs, fails, lies about its
content type or disappears. Everything listens on 127.0.0.1 on a free port. It runs in
a thread of the current process (:class:`ChaosServer`), as a subprocess
(``python -m hangguard.testing.chaos``) or over stdio (``--transport stdio``).

Tools: ``echo``, ``sleep``, ``hang``, ``raise`` (a JSON-RPC error), ``is_error`` (a result
with ``isError``), ``flaky`` (fails its first N calls, then succeeds), ``deadline_info``
(what budget the handler got) and ``request_headers`` (the names of the HTTP headers it
came with). Every call is recorded as :class:`ChaosEvent` objects, so a test can wait
until a handler started or see that it was cancelled. Transport faults are an
:class:`HttpFault` (never answer, ``text/html``, an HTTP status, close mid-response),
optionally only for some JSON-RPC methods or only for the first N matching requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Literal, TextIO, get_args

import uvicorn
from starlette.types import ASGIApp

from ._http import (
    Blackhole,
    FaultApp,
    FaultKind,
    HttpFault,
    authority,
    closed_port_url,
    listen_socket,
)
from ._tools import ChaosEvent, ChaosRecorder, build_chaos_server

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

Transport = Literal["streamable-http", "sse"]
_FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


class ChaosServer:
    """The chaos MCP server over HTTP (streamable HTTP or SSE), in a background thread.

    Use it as a context manager (sync or async); ``url`` is what a client connects to::

        async with ChaosServer() as chaos:
            async with hangguard.mcp.McpClient(chaos.url, timeout=1) as client:
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
        self._app = FaultApp(app, self)
        self._host = host
        self._sock = listen_socket(host, port)
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
        return f"http://{authority(self._host, self.port)}{self._path}"

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
            "the first calls, then answers), deadline_info() (the budget the handler got), "
            "request_headers() (the names of the request's HTTP headers), "
            "progress(steps, interval, then_hang) (reports progress, then answers or hangs). "
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
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        return _serve(args, parser)
    except KeyboardInterrupt:
        # Ctrl-C is how this server is meant to be stopped: no traceback.
        return 130


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
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
    try:
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
    except OSError as exc:
        # A busy port or an address not on this machine: one line, not a traceback.
        why = exc.strerror or str(exc)
        parser.exit(2, f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {why}\n")
    print(json.dumps({"event": "listening", "url": chaos.url}), flush=True)
    chaos.serve_forever()
    return 0
