"""What the task group needs to know about a function or a task: is it a coroutine
function, what is it called, what did it end with, and where is it stuck."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Final

__all__ = ["fn_name", "is_coroutine_function", "outcome_of", "stack_of"]

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
