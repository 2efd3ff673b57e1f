"""What the task group needs to know about a function or a task: is it a coroutine
function, what is it called, what did it end with, and where is it stuck.

Where it is stuck: the frames of the task's own await chain, on every Python. From 3.14,
asyncio records which task awaits which (``asyncio.capture_call_graph``); a task that
waits on another task then also shows where *that* one is stuck, a few hops down.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Final

from ._validate import bound_object, callable_name

__all__ = [
    "OP_ENTRY_NAMES",
    "fn_name",
    "frame_stack",
    "is_coroutine_function",
    "outcome_of",
    "stack_of",
    "thread_stacks",
]

_CO_COROUTINE: Final = inspect.CO_COROUTINE
#: How many frames of a stuck task's await chain are kept (innermost first).
_STACK_DEPTH: Final = 6
#: How many awaited tasks a stack follows down (3.14+), and how many tasks it looks
#: through to find each one: bounded, as cancelling a large group captures stacks.
_AWAIT_HOPS: Final = 3
_SCAN_LIMIT: Final = 512

# asyncio.capture_call_graph (3.14+), or None.
_capture_call_graph: Callable[..., Any] | None = getattr(asyncio, "capture_call_graph", None)


def is_coroutine_function(fn: object) -> bool:
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is not None and code.co_flags & _CO_COROUTINE:
        return True  # the common case, decided without inspect
    # inspect also knows functions marked with inspect.markcoroutinefunction (3.12+),
    # whose own code is not a coroutine's.
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


#: The entry points of an async op, in the order a guarded op looks for them: flowllm
#: 0.2's ``BaseAsyncOp`` (``async_call``, ``async_execute``), then flowllm 0.3's
#: ``BaseStep`` (``async def execute``; a sync ``execute`` is 0.2's ``BaseOp``, guarded
#: on the sync side).
OP_ENTRY_NAMES: Final = ("async_call", "async_execute", "execute")


def fn_name(fn: object) -> str:
    """The name of a task's function (see :func:`._validate.callable_name`).

    An op's entry point names the task after the op: ``self.ops[0].copy().async_call``
    of a ``SearchOp`` is ``SearchOp`` (not ``BaseAsyncOp.async_call``, where the method
    is defined), whether ``SearchOp`` is decorated or not.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    owner = bound_object(fn)
    if owner is not None and getattr(fn, "__name__", None) in OP_ENTRY_NAMES:
        return type(owner).__name__
    return callable_name(fn)


def outcome_of(task: asyncio.Task[Any]) -> Any:
    if task.cancelled():
        # Cancelled by someone other than the group: its place holds the cancellation.
        return asyncio.CancelledError(f"task {task.get_name()!r} was cancelled")
    exc = task.exception()
    return exc if exc is not None else task.result()


def _frame_lines(task: asyncio.Task[Any]) -> list[str]:
    frames: list[Any] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return [
        f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
        for f in reversed(frames[-_STACK_DEPTH:])
    ]


def _awaited_task(task: asyncio.Task[Any]) -> asyncio.Task[Any] | None:
    """The task ``task`` is waiting on (3.14+: it is in that task's awaited-by graph)."""
    assert _capture_call_graph is not None
    for scanned, other in enumerate(asyncio.all_tasks(task.get_loop())):
        if scanned >= _SCAN_LIMIT:
            return None
        if other is task or other.done():
            continue
        graph = _capture_call_graph(other, limit=0)  # limit=0: no frames, only awaited_by
        if any(parent.future is task for parent in graph.awaited_by):
            return other
    return None


def _awaited_lines(task: asyncio.Task[Any]) -> list[str]:
    lines: list[str] = []
    seen = {task}
    current = task
    for _ in range(_AWAIT_HOPS):
        awaited = _awaited_task(current)
        if awaited is None or awaited in seen:
            break
        seen.add(awaited)
        # Innermost first: the awaited task's frames come before its awaiter's.
        lines = [*_frame_lines(awaited), f"(task {awaited.get_name()!r}, awaited by:)", *lines]
        current = awaited
    return lines


def stack_of(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: the innermost frames of its await chain, one a line.

    From 3.14, when it waits on another task, that task's frames come first, marked.
    """
    lines = _frame_lines(task)
    if _capture_call_graph is not None:
        try:
            lines = _awaited_lines(task) + lines
        except Exception:
            pass
    return "\n".join(lines)


def frame_stack(frame: FrameType | None, depth: int = _STACK_DEPTH) -> str:
    """A thread's stack from ``frame`` outwards: the innermost frames, one a line."""
    lines: list[str] = []
    while frame is not None and len(lines) < depth:
        code = frame.f_code
        lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return "\n".join(lines)


def thread_stacks(thread_ids: Iterable[int | None]) -> dict[int, str]:
    """Where each of these threads is now (one snapshot of every thread's frame).

    A thread cannot be asked where it is, so this reads the interpreter's table of
    current frames (``sys._current_frames``, the documented way to do it).
    """
    wanted = {t for t in thread_ids if t is not None}
    if not wanted:
        return {}
    frames = sys._current_frames()
    return {t: frame_stack(frames.get(t)) for t in wanted}
