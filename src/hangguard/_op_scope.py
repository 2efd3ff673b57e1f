"""``traced``: a span and a deadline, both named, around one awaited call.

:func:`run_in_scope` is the scope itself, shared with guarded ops: the budget is the
given one, else the name's ``HANGGUARD_BUDGETS`` entry, else ``HANGGUARD_DEFAULT_BUDGET``,
read at each call. The span is named for the work and carries ``hangguard.op.name``; a
failure marks it ERROR with ``error.type``; a cancellation is noted (the reason and cause
as span attributes and a ``hangguard.cancelled`` event) and passed on, never an error.
With no SDK provider installed there is no span work at all, only the deadline.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import _config, _inflight, _ps, _spans, _watchdog
from ._cancel_record import CancelRecord
from ._deadline import check_timeout, deadline, remaining
from ._validate import callable_name

__all__ = ["check_budget", "check_name", "run_in_scope", "traced"]

P = ParamSpec("P")
R = TypeVar("R")


def check_name(name: object) -> str | None:
    """Validate a span/deadline ``name`` argument (``None``: derive it later)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string or None, got {name!r}")
    return name


def check_budget(budget: float | None) -> float | None:
    """Validate a ``budget`` argument at decoration time; ``None`` defers to the env."""
    return None if budget is None else check_timeout(budget, "budget")


@_watchdog.holds_span
async def run_in_scope(name: str, budget: float | None, body: Callable[[], Awaitable[R]]) -> R:
    """Await ``body()`` in a span and a deadline, both named ``name``."""
    # Read per call, so the env can change between runs and a bad value fails this call.
    seconds = budget if budget is not None else _config.op_budget(name)
    _watchdog.maybe_watch()
    _ps.maybe_start()  # HANGGUARD_PS=1: the watcher starts at the first op, never at import
    tracer = _spans.get_tracer()
    if tracer is None:
        async with deadline(seconds, name=name):
            with _inflight.tracking(_inflight.OP, name):  # in `hangguard ps` while it runs
                return await body()

    span = _spans.start_op_span(tracer, name, seconds, remaining())
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        async with deadline(seconds, name=name):
            with _inflight.tracking(_inflight.OP, name, span=span):
                return await body()
    except asyncio.CancelledError as exc:
        # Cancellation is not an error: noted with its cause, and passed on.
        with _spans.contained():
            # An enclosing deadline that binds passes through this scope as a cancellation
            # whose message is the deadline's DeadlineCancel; attributes as on group tasks.
            CancelRecord.of_cancelled(exc).write(span)
        raise
    except BaseException as exc:
        _spans.record_failure(span, exc)
        raise
    finally:
        otel_context.detach(token)
        with _spans.contained():
            span.end()  # a failing span processor must not replace the outcome


def _default_name(fn: Callable[..., Any]) -> str:
    # "test_x.<locals>.fetch" -> "fetch": the budget key should not depend on nesting.
    return callable_name(fn).rpartition("<locals>.")[2]


def _traced(
    fn: Callable[P, Awaitable[R]], name: str | None, budget: float | None
) -> Callable[P, Coroutine[Any, Any, R]]:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"traced() needs an async def function, got {callable_name(fn)!r}")
    span_name = name or _default_name(fn)
    _config.note_op_name(span_name)  # for the HANGGUARD_BUDGETS typo check

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in_scope(span_name, budget, lambda: fn(*args, **kwargs))

    return wrapper


@overload
def traced(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def traced(
    name: str | None = None, /, *, budget: float | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


@overload
def traced(
    *, name: str | None = None, budget: float | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


def traced(
    fn_or_name: Callable[..., Awaitable[Any]] | str | None = None,
    /,
    *,
    name: str | None = None,
    budget: float | None = None,
) -> Any:
    """Run an ``async def`` in a span and a deadline named after it.

    The budget is ``budget`` if given, else the ``HANGGUARD_BUDGETS`` entry for the name,
    else ``HANGGUARD_DEFAULT_BUDGET``, read at each call (``budget=math.inf`` opts out of
    the env). The name defaults to the function's qualified name. Failures mark the span
    ERROR; a cancellation is noted as an event and passed on. Usable bare or with
    arguments, and the signature is kept::

        @hangguard.traced(budget=30)
        async def fetch(url: str) -> bytes: ...

        @hangguard.traced
        async def rank(items: list[str]) -> list[str]: ...
    """
    if isinstance(fn_or_name, str) or fn_or_name is None:
        if fn_or_name is not None and name is not None:
            raise TypeError("traced() got the name twice (positional and name=)")
        given = check_name(fn_or_name if fn_or_name is not None else name)
        seconds = check_budget(budget)

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            return _traced(fn, given, seconds)

        return decorate
    if not callable(fn_or_name):
        raise TypeError(f"traced() takes an async function or a name, got {fn_or_name!r}")
    return _traced(fn_or_name, check_name(name), check_budget(budget))
