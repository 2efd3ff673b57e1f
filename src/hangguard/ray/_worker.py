"""The worker side of a guarded remote task: the budget, the trace, where it was stuck.

Every task a :class:`~hangguard.ray.RemoteGroup` submits runs through :func:`run_task` in
its Ray worker. The body runs under :func:`hangguard.deadline` with the budget the driver
sent (so an MCP client, a nested group or a retry inside it inherits it), in a
``ray task <name>`` span whose parent is the driver's task span. When the budget runs out
while the body still runs, a watchdog thread records the body's stack in a
``hangguard.cancelled`` event before the driver's cancel arrives; when the cancel arrives
(a ``KeyboardInterrupt`` from ``ray.cancel``) and nothing was recorded yet, the stack it
interrupted is recorded instead.

Spans are exported from the worker only if the application opted in with
``HANGGUARD_RAY_WORKER_TRACING=1`` in the workers' environment (see
:func:`hangguard.ray.worker_env`): then hangguard sets up tracing in the worker process
from the ``OTEL_*`` variables (unless the process already has a provider) and flushes
at the end of each task, within :data:`FLUSH_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from .. import _inflight, _providers, _spans
from .._cancel_record import CancelRecord
from .._deadline import deadline, now
from .._exceptions import ConfigError
from .._semconv import (
    ATTR_DEADLINE_BUDGET_S,
    ATTR_GROUP_NAME,
    ATTR_RAY_NODE_ID,
    ATTR_RAY_TASK_ID,
    ATTR_RAY_WORKER_PID,
    ATTR_TASK_NAME,
    ATTR_TASK_STACK,
    CANCEL_DEADLINE,
    CANCEL_RAY,
    SPAN_RAY_TASK,
)
from .._task_info import fn_name, is_coroutine_function, stack_of
from ._driver_inflight import NODES_KEY, task_ended, task_started
from ._wire import DEADLINE_KEY, GROUP_KEY, TASK_KEY, TIMEOUT_KEY, budget_of

__all__ = ["ENV_WORKER_TRACING", "FLUSH_TIMEOUT", "make_shim", "run_task"]

logger = logging.getLogger("hangguard")

#: Set to 1 in the workers' environment to let hangguard set up tracing in them.
ENV_WORKER_TRACING: Final = "HANGGUARD_RAY_WORKER_TRACING"
#: The most a task's end waits for its spans to be exported, in seconds.
FLUSH_TIMEOUT: Final = 2.0
_STACK_DEPTH: Final = 6
#: The watchdog takes the stack this long (at most 5 % of the budget) before it runs out.
_WATCH_LEAD: Final = 0.2

_setup_lock = threading.Lock()
_setup_done = False
_flush: Callable[[float], object] | None = None


def _worker_tracing() -> Callable[[float], object] | None:
    """Set up tracing in this worker once, if opted in; returns the flush to call."""
    global _setup_done, _flush
    if _setup_done:
        return _flush
    with _setup_lock:
        if _setup_done:
            return _flush
        _setup_done = True
        raw = os.environ.get(ENV_WORKER_TRACING, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return None
        if raw not in ("1", "true", "yes", "on"):
            raise ConfigError(
                f"{ENV_WORKER_TRACING} must be 1/true/yes/on or 0/false/no/off, got {raw!r}",
                name=ENV_WORKER_TRACING,
                value=raw,
            )
        existing = _providers.tracer_provider()
        if existing is not None:
            # The worker already exports (the application set it up): flush that one.
            flush = getattr(existing, "force_flush", None)
            if callable(flush):
                _flush = lambda seconds: flush(int(seconds * 1000))  # noqa: E731
            return _flush
        from ..tracing import setup_tracing

        # The process-wide provider, so what the body calls (an MCP SDK, an HTTP client)
        # joins the same trace; metrics stay with the driver.
        handle = setup_tracing(metrics_enabled=False)
        _flush = handle.force_flush
        return _flush


def _frames_stack(frames: list[traceback.FrameSummary]) -> str:
    return _spans.format_stack(list(reversed(frames[-_STACK_DEPTH:])))


class _Watchdog:
    """Records where the body is when its budget runs out (from a timer thread)."""

    def __init__(self, span: Span, budget: float, cause: str) -> None:
        self.fired = False
        self._span = span
        self._cause = cause
        self._thread = threading.get_ident()
        self._task: asyncio.Task[Any] | None = None
        self._timer = threading.Timer(budget, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch_task(self, task: asyncio.Task[Any] | None) -> None:
        self._task = task

    def _fire(self) -> None:
        task = self._task
        if task is not None:
            if task.done():
                return
            stack = stack_of(task)
        else:
            frame = sys._current_frames().get(self._thread)
            if frame is None:
                return
            stack = _frames_stack(traceback.extract_stack(frame))
        self.fired = True
        CancelRecord(CANCEL_DEADLINE, self._cause).write(
            self._span, extra=lambda: {ATTR_TASK_STACK: stack}
        )

    def stop(self) -> None:
        self._timer.cancel()


def _interrupted_at(tb: TracebackType | None) -> str:
    return _frames_stack(traceback.extract_tb(tb))


async def _run_async(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    budget: float,
    name: str | None,
    watch: _Watchdog | None,
) -> Any:
    if watch is not None:
        watch.watch_task(asyncio.current_task())
    # Enforced here, in a task: the body is cancelled when the budget runs out.
    async with deadline(budget, name=name):
        return await fn(*args, **kwargs)


def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    budget: float,
    name: str | None,
    span: Span | None,
) -> Any:
    watch: _Watchdog | None = None
    if span is not None and budget != float("inf"):
        # A moment early, so the stack is taken before the driver's cancel can land.
        watch = _Watchdog(span, budget - min(_WATCH_LEAD, budget * 0.05), name or "")
    try:
        if is_coroutine_function(fn):
            with deadline(budget, name=name):
                return asyncio.run(_run_async(fn, args, kwargs, budget, name, watch))
        if budget == float("inf"):
            return fn(*args, **kwargs)  # no budget was sent: nothing to put in force
        # Sync code: the deadline is readable (remaining(), nested calls), not enforced;
        # the driver's cancel stops the body.
        with deadline(budget, name=name):
            return fn(*args, **kwargs)
    except KeyboardInterrupt as exc:
        if span is not None and (watch is None or not watch.fired):
            where = _interrupted_at(exc.__traceback__)
            CancelRecord(CANCEL_RAY, "").write(span, extra=lambda: {ATTR_TASK_STACK: where})
        raise
    except BaseException as exc:
        if span is not None:
            _spans.record_failure(span, exc)
        raise
    finally:
        if watch is not None:
            watch.stop()


_node_id = ""


def _node() -> str:
    """This worker's Ray node id (a worker process never moves: read once)."""
    global _node_id
    if not _node_id:
        import ray

        _node_id = ray.get_runtime_context().get_node_id()
    return _node_id


def _task_id() -> str:
    import ray

    return ray.get_runtime_context().get_task_id() or ""


def run_task(
    fn: Callable[..., Any], meta: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run ``fn(*args, **kwargs)`` in this worker under the budget and trace in ``meta``."""
    nodes = meta.get(NODES_KEY)
    reported = ""
    if nodes is not None:  # the driver's ps asks where its tasks run: say it if it lasts
        reported = _task_id()
        task_started(nodes, reported)
    try:
        return _run_task(fn, meta, args, kwargs)
    finally:
        if reported:
            task_ended(reported)


def _run_task(
    fn: Callable[..., Any], meta: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    budget = budget_of(meta, _node() if TIMEOUT_KEY in meta else "")
    name = meta.get(DEADLINE_KEY) or None
    flush = _worker_tracing()
    try:
        tracer = _spans.get_tracer()
        if tracer is None:
            return _call(fn, args, kwargs, budget, name, None)
        task = str(meta.get(TASK_KEY) or fn_name(fn))
        attributes: dict[str, Any] = {
            ATTR_TASK_NAME: task,
            ATTR_GROUP_NAME: str(meta.get(GROUP_KEY, "")),
            ATTR_RAY_NODE_ID: _node(),
            ATTR_RAY_TASK_ID: _task_id(),
            ATTR_RAY_WORKER_PID: os.getpid(),
        }
        if budget != float("inf"):
            attributes[ATTR_DEADLINE_BUDGET_S] = budget
        span = tracer.start_span(
            SPAN_RAY_TASK.format(task), context=propagate.extract(meta), attributes=attributes
        )
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                # In the worker's own `hangguard ps` and live snapshots while it runs.
                until = now() + budget
                entry = _inflight.open_entry(_inflight.RAY, task, span=span, deadline=until)
                with _inflight.entered(entry):
                    return _call(fn, args, kwargs, budget, name, span)
        finally:
            span.end()
    finally:
        if flush is not None:
            started = time.monotonic()
            try:
                flush(FLUSH_TIMEOUT)
            except Exception:
                logger.warning(
                    "ray worker: flushing spans failed after %.1fs",
                    time.monotonic() - started,
                    exc_info=True,
                )


def make_shim(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function Ray runs for ``fn``: the meta dict first, then ``fn``'s arguments."""

    def shim(meta: dict[str, Any], /, *args: Any, **kwargs: Any) -> Any:
        return run_task(fn, meta, args, kwargs)

    # Shown by Ray (task names, the dashboard) as the user's function.
    shim.__name__ = getattr(fn, "__name__", "task")
    shim.__qualname__ = getattr(fn, "__qualname__", shim.__name__)
    shim.__doc__ = getattr(fn, "__doc__", None)
    return shim
