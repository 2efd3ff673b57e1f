"""What the task group needs to know about a function or a task: is it a coroutine
function, what is it called, what did it end with, and where is it stuck."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Iterable
from types import FrameType
from typing import Any, Final

__all__ = [
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


def is_coroutine_function(fn: object) -> bool:
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is not None:
        return bool(code.co_flags & _CO_COROUTINE)
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def fn_name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def outcome_of(task: asyncio.Task[Any]) -> Any:
    if task.cancelled():
        # Cancelled by someone other than the group: its place holds the cancellation.
        return asyncio.CancelledError(f"task {task.get_name()!r} was cancelled")
    exc = task.exception()
    return exc if exc is not None else task.result()


def stack_of(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: the innermost frames of its await chain, one a line."""
    frames: list[Any] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(
        f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
        for f in reversed(frames[-_STACK_DEPTH:])
    )


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
