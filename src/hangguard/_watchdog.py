"""The blocked-event-loop watchdog: a blocking call in async code, seen with its stack.

A blocking call in a coroutine (a sync SDK, ``requests``, ``time.sleep``, a long parse)
stops the event loop: no timeout, deadline or join can fire until it returns, so every
guarantee of this library lapses silently and the trace shows only a long span. The
watchdog makes it visible. The loop runs a heartbeat callback every ``min(20 ms,
threshold / 4)``; a monitor thread sleeps until the next beat is overdue by the
threshold, and then, *while the loop is still blocked*, samples the loop thread's stack
(so the frame that blocks is recorded, not the one after). When the loop runs again the
heartbeat records, in the loop thread:

* a ``hangguard.loop_blocked`` event (duration, stack, threshold) on the span of the
  hangguard task or op that was running, if it is still open; else a ``loop blocked``
  span (a child of that span when there was one, else a root span);
* the ``hangguard.loop.blocked`` histogram;
* one WARNING log line with the stack.

A block that lasts (1 s, or ten thresholds if more) is also logged while it lasts, from
the monitor thread, since a loop that never resumes would otherwise never be reported.

Repeated blocks at the same frame are rate-limited (one report per frame per minute, the
count of the others in the next one); the histogram counts every block. Detection comes
at most ``threshold + heartbeat`` after the block starts; the reported duration is exact
to within one heartbeat. Idle, the cost is the heartbeat: no other thread wakes more
than once per ``threshold + heartbeat``.

Turned on by ``setup_tracing(loop_block_threshold=...)`` or ``HANGGUARD_LOOP_BLOCK_THRESHOLD``
(the loops hangguard runs in are watched from their first guarded op, task group or
``to_thread``), or by :func:`watch_loop` from inside the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from . import _config, _deadline, _late_timers, _metrics, _spans
from ._deadline import check_timeout
from ._exceptions import ConfigError
from ._semconv import (
    ATTR_LOOP_BLOCKED_S,
    ATTR_LOOP_STACK,
    ATTR_LOOP_THRESHOLD_S,
    EVENT_LOOP_BLOCKED,
    SPAN_LOOP_BLOCKED,
)
from ._task_info import frame_stack

__all__ = [
    "LoopWatchdog",
    "enable",
    "holds_span",
    "maybe_watch",
    "resolve_threshold",
    "watch_loop",
]

logger = logging.getLogger("hangguard")

#: The heartbeat never beats slower than this (detection is within threshold + this).
MAX_HEARTBEAT: Final = 0.02
#: Frames of the blocked loop's stack kept (innermost first).
STACK_DEPTH: Final = 12
#: Reports of blocks at one frame are at most one per this many seconds.
RATE_LIMIT_S: Final = 60.0
#: A loop blocked this long (or 10 thresholds, if more) is logged while still blocked.
STILL_BLOCKED_MIN_S: Final = 1.0


@dataclass(slots=True)
class _Block:
    """One blocked stretch of the loop, as sampled while it was blocked."""

    since: float  # the last heartbeat before it (monotonic)
    stack: str
    where: str  # the innermost frame, "file:line in function"
    span: Span | None
    detected: float = 0.0  # when the monitor sampled it (monotonic)
    ended: float | None = None


@dataclass(slots=True)
class _Rate:
    last: float = -math.inf
    suppressed: int = 0


class LoopWatchdog:
    """Watches one event loop; :meth:`stop` ends it (see :func:`watch_loop`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.threshold = threshold
        self.heartbeat = min(MAX_HEARTBEAT, threshold / 4)
        #: A block this long is logged while it lasts, before the loop resumes.
        self.still_blocked_after = max(STILL_BLOCKED_MIN_S, 10 * threshold)
        # Held weakly: the watchdog must not keep a finished loop alive.
        self._loop_ref = weakref.ref(loop)
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._block: _Block | None = None
        self._last_block: _Block | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rates: dict[str, _Rate] = {}
        self._thread: threading.Thread | None = None
        self._context: contextvars.Context | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop watched (``None`` once it is gone)."""
        return self._loop_ref()

    @property
    def running(self) -> bool:
        """Whether the watchdog is still watching."""
        return not self._stop.is_set()

    def _start(self) -> None:
        loop = self._loop_ref()
        assert loop is not None
        # The heartbeat runs in a copy of this context (so the providers injected here are
        # the ones it reports to) with no current span and no deadline of the caller's.
        ctx = contextvars.copy_context()
        ctx.run(_clear_caller_state)
        self._context = ctx
        self._handle = loop.call_later(self.heartbeat, self._on_beat, context=ctx)
        self._thread = threading.Thread(
            target=self._monitor, name="hangguard-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the monitor thread ends within one threshold)."""
        self._stop.set()
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        loop = self._loop_ref()
        if loop is not None and _watchdogs.get(loop) is self:
            del _watchdogs[loop]

    # -- in the loop --------------------------------------------------------------------

    def _on_beat(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._beat = now
            block, self._block = self._block, None
            if block is not None:
                block.ended = now
        if block is not None:
            try:
                self._report(block)
            except Exception:  # telemetry never breaks the loop: logged once, swallowed
                logger.exception("hangguard: reporting a blocked loop failed")
        loop = self._loop_ref()
        if loop is not None and not self._stop.is_set():
            self._handle = loop.call_later(self.heartbeat, self._on_beat, context=self._context)

    def _report(self, block: _Block) -> None:
        assert block.ended is not None
        blocked = block.ended - block.since
        _metrics.record_loop_blocked(blocked)
        rate = self._rates.setdefault(block.where, _Rate())
        if block.ended - rate.last < RATE_LIMIT_S:
            rate.suppressed += 1
            return
        rate.last = block.ended
        suppressed, rate.suppressed = rate.suppressed, 0
        attrs: dict[str, str | float] = {
            ATTR_LOOP_BLOCKED_S: round(blocked, 4),
            ATTR_LOOP_STACK: block.stack,
            ATTR_LOOP_THRESHOLD_S: self.threshold,
        }
        span = block.span
        if span is not None and span.is_recording():
            span.add_event(EVENT_LOOP_BLOCKED, attrs)
        else:
            tracer = _spans.get_tracer()
            if tracer is not None:
                parent = (
                    trace.set_span_in_context(span)
                    if span is not None
                    else otel_context.Context()  # not one of ours: a root span
                )
                end_ns = time.time_ns()
                start_ns = end_ns - int(blocked * 1e9)
                standalone = tracer.start_span(
                    SPAN_LOOP_BLOCKED, context=parent, start_time=start_ns, attributes=attrs
                )
                standalone.add_event(EVENT_LOOP_BLOCKED, attrs, timestamp=end_ns)
                standalone.end(end_time=end_ns)
        more = f" ({suppressed} more block(s) there since the last report)" if suppressed else ""
        logger.warning(
            "event loop blocked for %.3fs (threshold %gs) in %s%s; no timeout or deadline "
            "could fire meanwhile. Stack while blocked (innermost first):\n      %s",
            blocked,
            self.threshold,
            block.where,
            more,
            block.stack.replace("\n", "\n      "),
        )

    # -- in the monitor thread --------------------------------------------------------

    def _monitor(self) -> None:
        sampled_for: float | None = None
        warned = False
        paused = False
        while not self._stop.is_set():
            loop = self._loop_ref()
            if loop is None or loop.is_closed():
                self._stop.set()
                return
            running = loop.is_running()
            del loop
            if not running:
                # Between run_until_complete() calls no beat runs, and none is missed.
                paused = True
                self._stop.wait(self.threshold)
                continue
            if paused:
                paused = False
                with self._lock:
                    self._beat = time.monotonic()
            beat = self._beat
            due = beat + self.heartbeat + self.threshold
            wait = due - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            if sampled_for != beat:
                sampled_for = beat
                warned = False
                self._sample(beat)
            elif not warned and time.monotonic() - beat >= self.still_blocked_after:
                # A loop that may never resume would never be reported: say it now, once.
                warned = True
                self._warn_still_blocked(beat)
            self._stop.wait(self.threshold)  # until the loop beats again

    def _warn_still_blocked(self, beat: float) -> None:
        with self._lock:
            block = self._block
        if block is None or block.since != beat:
            return
        frame = sys._current_frames().get(self._loop_thread)
        stack = frame_stack(frame, STACK_DEPTH) or block.stack
        logger.warning(
            "event loop still blocked after %.1fs (threshold %gs), now in %s; nothing on "
            "this loop can run or time out until it returns. Stack (innermost first):\n      %s",
            time.monotonic() - beat,
            self.threshold,
            stack.split("\n", 1)[0],
            stack.replace("\n", "\n      "),
        )

    def _sample(self, beat: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        stack = frame_stack(frame, STACK_DEPTH)
        where = stack.split("\n", 1)[0] if stack else "(unknown)"
        block = _Block(
            since=beat, stack=stack, where=where, span=_our_span(frame), detected=time.monotonic()
        )
        with self._lock:
            if self._beat != beat:
                return  # it beat meanwhile: not blocked after all
            self._block = block
            self._last_block = block

    def blocked_in(self, since: float) -> str | None:
        """Where the loop was blocked at some point after ``since`` (monotonic), if it was."""
        with self._lock:
            block = self._block or self._last_block
        if block is None:
            return None
        if block.ended is not None and block.ended < since:
            return None
        return block.where


def _clear_caller_state() -> None:
    otel_context.attach(otel_context.Context())  # never detached: this context is private
    _deadline._current.set(None)


# The code of hangguard's own coroutines that hold the span of the task or op they run
# (a local named ``span``): the blocked loop's stack passes through them. Registered by
# those modules (``holds_span``), so the watchdog imports none of them.
_span_codes: set[CodeType] = set()


F = TypeVar("F", bound=Callable[..., Any])


def holds_span(fn: F) -> F:
    """Mark ``fn`` as a coroutine whose frame keeps its span in a local named ``span``."""
    _span_codes.add(fn.__code__)
    return fn


def _our_span(frame: FrameType | None) -> Span | None:
    while frame is not None:
        if frame.f_code in _span_codes:
            span = frame.f_locals.get("span")
            return span if isinstance(span, Span) else None
        frame = frame.f_back
    return None


_watchdogs = _late_timers.watchdogs
_watch_lock = threading.Lock()
#: The threshold set by setup_tracing (or ``enable``); ``None``: the env decides.
_enabled: float | None = None


def _check_threshold(value: object, name: str) -> float:
    seconds = check_timeout(value, name)  # type: ignore[arg-type]
    if seconds <= 0 or math.isinf(seconds):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return seconds


def watch_loop(
    threshold: float | None = None, *, loop: asyncio.AbstractEventLoop | None = None
) -> LoopWatchdog:
    """Watch the running event loop for blocking calls; returns the watchdog.

    ``threshold`` (seconds) defaults to ``HANGGUARD_LOOP_BLOCK_THRESHOLD``, else 0.1. A
    block longer than that is reported with the stack sampled while blocked (see
    :mod:`hangguard` docs, "sync code and threads"). Call it inside the loop; a second
    call for the same loop returns the watchdog already running::

        async def main() -> None:
            hangguard.watch_loop(0.1)
            ...
    """
    if threshold is None:
        env = _config.loop_block_threshold()
        seconds = env if env is not None else DEFAULT_THRESHOLD
    else:
        seconds = _check_threshold(threshold, "threshold")
    target = loop if loop is not None else asyncio.get_running_loop()
    with _watch_lock:
        existing = _watchdogs.get(target)
        if isinstance(existing, LoopWatchdog) and existing.running:
            return existing
        dog = LoopWatchdog(target, seconds)
        _watchdogs[target] = dog
    dog._start()
    return dog


#: The threshold of :func:`watch_loop` when neither the call nor the env gives one.
DEFAULT_THRESHOLD: Final = 0.1


def resolve_threshold(threshold: float | None) -> float | None:
    """``setup_tracing``'s ``loop_block_threshold``: seconds, or ``None`` for off.

    ``None`` reads ``HANGGUARD_LOOP_BLOCK_THRESHOLD`` (unset or ``off``: off); ``0`` is
    off. A bad value raises here, naming the parameter or the variable.
    """
    if threshold is None:
        return _config.loop_block_threshold()
    if not isinstance(threshold, bool) and threshold == 0:
        return None
    return _check_threshold(threshold, "loop_block_threshold")


def enable(seconds: float | None) -> None:
    """Watch every loop hangguard runs in (from its first guarded op, group or to_thread)
    with this threshold; ``None`` leaves it to the env."""
    global _enabled
    _enabled = seconds


def maybe_watch() -> None:
    """Start watching the running loop if the watchdog is on (cheap when it is not)."""
    seconds = _enabled
    if seconds is None:
        try:
            seconds = _config.loop_block_threshold()
        except ConfigError:
            logger.error("the loop watchdog stays off", exc_info=True)
            return
        if seconds is None:
            return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    dog = _watchdogs.get(loop)
    if dog is None or not dog.running:
        watch_loop(seconds, loop=loop)
