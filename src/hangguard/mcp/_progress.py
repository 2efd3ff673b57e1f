"""Progress-aware timeouts: a call may go on while the server keeps reporting progress.

The MCP spec lets a client reset its timeout on each progress notification as long as a
hard maximum stays (the TypeScript SDK's ``resetTimeoutOnProgress``/``maxTotalTimeout``).
:class:`IdleWatch` is that reset: a timer of ``idle`` seconds, restarted by each
notification, that cancels the call when it runs out; the call's own deadline stays the
hard maximum. Each notification is a ``hangguard.mcp.progress`` event on the span.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from .._exceptions import DeadlineExceeded
from .._semconv import ATTR_MCP_PROGRESS, ATTR_MCP_PROGRESS_TOTAL, EVENT_MCP_PROGRESS

__all__ = ["IdleWatch"]


class IdleWatch:
    """Cancel the current task after ``idle`` seconds without progress (``with`` block).

    At its exit a cancellation it caused becomes ``DeadlineExceeded`` naming ``what``.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_idle", "_span", "_task", "_what", "seen")

    def __init__(self, idle: float, what: str) -> None:
        self._idle = idle
        self._what = what
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._fired = False
        self._span: trace.Span | None = None
        self.seen = 0

    def __enter__(self) -> IdleWatch:
        self._task = asyncio.current_task()
        assert self._task is not None, "IdleWatch needs a running task"
        self._cancelling = self._task.cancelling()
        self._span = trace.get_current_span()
        self._arm()
        return self

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None and not self._fired:
            self._handle = self._task.get_loop().call_later(self._idle, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._task is not None and not self._task.done():
            self._fired = True
            self._task.cancel(f"hangguard: no progress for {self._idle:g}s ({self._what})")

    async def progress(self, value: float, total: float | None, message: str | None) -> None:
        """The SDK's progress callback: restart the idle timer, note it on the span."""
        self.seen += 1
        self._arm()
        span = self._span
        if span is not None and span.is_recording():
            attrs: dict[str, AttributeValue] = {ATTR_MCP_PROGRESS: value}
            if total is not None:
                attrs[ATTR_MCP_PROGRESS_TOTAL] = total
            span.add_event(EVENT_MCP_PROGRESS, attrs)

    def restart(self) -> None:
        """A new attempt starts: it gets a full idle period."""
        self._arm()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if (
            self._fired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise DeadlineExceeded(
                f"{self._what}: no progress from the server for {self._idle:g}s "
                f"(idle_timeout; {self.seen} progress notification(s) before)",
                deadline_name="idle_timeout",
                budget=self._idle,
            ) from exc
