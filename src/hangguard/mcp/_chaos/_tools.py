"""The chaos server's tools and the log of what they did.

:func:`build_chaos_server` makes the ``MCPServer`` with its misbehaving tools; every call
is recorded as :class:`ChaosEvent` objects in a :class:`ChaosRecorder`, which tests wait
on instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError as SdkMcpError
from mcp_types import INTERNAL_ERROR, ToolAnnotations

from ..._deadline import remaining
from .._meta import TIMEOUT_META_KEY
from .._server import DeadlineMiddleware

__all__ = ["ChaosEvent", "ChaosRecorder", "build_chaos_server"]


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

    Recording costs the same however long the log is (benchmarks record thousands)::

        await chaos.recorder.wait_for("started", "hang")   # the handler is running
        assert chaos.recorder.count("cancelled", "hang") == 0
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
    capped by ``max_timeout``. Serve it yourself, or call it in-process::

        async with hangguard.mcp.McpClient(build_chaos_server(), timeout=1) as client:
            await client.call_tool("echo", {"text": "hi"})
    """
    recorder = recorder if recorder is not None else ChaosRecorder()
    middleware = [DeadlineMiddleware(max_timeout)] if deadline_middleware else []
    with _quiet_sdk_logging_setup():
        server: MCPServer[Any] = MCPServer(name, middleware=middleware)
    flaky_calls: dict[str, int] = {}
    flaky_lock = threading.Lock()

    # Annotations as a real server would set them: the reading tools are safe to repeat;
    # hang and flaky say nothing, so a client must not re-send them on its own.
    read_only = ToolAnnotations(read_only_hint=True)

    @server.tool(description="Return the text it was given.", annotations=read_only)
    async def echo(text: str = "") -> str:
        async with _track(recorder, "echo"):
            return text

    @server.tool(description="Sleep for the given seconds, then answer.", annotations=read_only)
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
            raise SdkMcpError(code=code, message=message)

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
                    raise SdkMcpError(code=INTERNAL_ERROR, message=f"chaos: flaky call {n} failed")
                raise ToolError(f"chaos: flaky call {n} failed")
            return f"ok after {n - 1} failure(s)"

    @server.tool(
        description=(
            "Report progress `steps` times, `interval` seconds apart, then answer "
            "(or, with then_hang, stop reporting and never answer)."
        ),
        annotations=read_only,
    )
    async def progress(
        ctx: Context, steps: int = 5, interval: float = 0.05, then_hang: bool = False
    ) -> str:
        async with _track(recorder, "progress", steps=steps):
            for step in range(1, steps + 1):
                await asyncio.sleep(interval)
                await ctx.report_progress(step, steps, f"step {step}")
            if then_hang:
                await asyncio.Event().wait()
            return f"{steps} steps"

    @server.tool(description="Report the deadline the handler runs under.", annotations=read_only)
    async def deadline_info(ctx: Context) -> dict[str, Any]:
        async with _track(recorder, "deadline_info"):
            left = remaining()
            meta = ctx.request_context.meta or {}
            return {
                "remaining_s": None if math.isinf(left) else left,
                "timeout_ms": meta.get(TIMEOUT_META_KEY),
            }

    @server.tool(
        description="Report the names of the HTTP headers the request came with.",
        annotations=read_only,
    )
    async def request_headers(ctx: Context) -> list[str]:
        async with _track(recorder, "request_headers"):
            # Names only: values may be credentials.
            return sorted(name.lower() for name in (ctx.headers or {}))

    return server


@contextlib.contextmanager
def _quiet_sdk_logging_setup() -> Iterator[None]:
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
