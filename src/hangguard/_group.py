"""The guarded task group: submit coroutines, join them without ever hanging.

It realises the seed's ``submit_async_task`` / ``join_async_task`` done right: results in
submit order, the first failure raised as itself once every sibling is cancelled and
finished, a join that ends on time (its own timeout, ``HANGGUARD_JOIN_TIMEOUT`` or the
enclosing deadline, whichever is earliest, plus a bounded grace for tasks that ignore
their cancellation; with none of them set it waits, like ``gather``), every failure
logged once with its traceback, and every cancellation recorded with its cause.

Untraced use (no SDK installed) adds one done-callback per task to a raw
``loop.create_task``; span work happens only when a real tracer provider is installed.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from . import _config, _metrics, _semconv, _spans, _watchdog
from ._deadline import Deadline, check_timeout, current_deadline, remaining
from ._exceptions import ConfigError, DeadlineExceeded, JoinTimeout
from ._limiter import Limiter
from ._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_GRACE_S,
    ATTR_CANCEL_REASON,
    ATTR_GROUP_CANCELLED,
    ATTR_GROUP_FAILED,
    ATTR_GROUP_LIMIT,
    ATTR_GROUP_NAME,
    ATTR_GROUP_SERIAL,
    ATTR_GROUP_SIZE,
    ATTR_GROUP_TIMED_OUT,
    ATTR_TASK_NAME,
    ATTR_TASK_STACK,
    ATTR_TIMEOUT_S,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    CANCEL_SIBLING_FAILED,
    CANCEL_TIMEOUT,
    EVENT_CANCEL_IGNORED,
    EVENT_CANCELLED,
    SPAN_GROUP,
    SPAN_TASK,
)
from ._task_info import fn_name, is_coroutine_function, outcome_of, stack_of

__all__ = ["TaskGroup"]

logger = logging.getLogger("hangguard")

T = TypeVar("T")

#: Await stacks are captured for at most this many cancelled tasks per group, so that
#: cancelling 10,000 tasks stays cheap; the rest get the event without a stack.
STACK_CAPTURES: Final = 5

# Tasks that ignored their cancellation past the grace: kept referenced so they are not
# garbage collected mid-run, and their eventual outcome is still logged.
_abandoned: set[asyncio.Task[Any]] = set()

_NOT_CHECKED: Final = object()


class _CancelInfo:
    __slots__ = ("cause", "reason")

    def __init__(self, reason: str, cause: str) -> None:
        self.reason = reason
        self.cause = cause


class TaskGroup:
    """Run coroutines concurrently and join them within a bounded time.

    ``submit`` starts a task at once; ``join`` waits for all of them and returns their
    results in submit order. With ``return_exceptions=False`` the first failure is raised
    as itself, after every sibling has been cancelled and has finished; with ``True`` the
    exceptions stand in their tasks' places. On timeout (``timeout``, else
    ``HANGGUARD_JOIN_TIMEOUT``, capped by the enclosing :func:`hangguard.deadline`) the
    unfinished tasks are cancelled and :class:`JoinTimeout` carries the partial results::

        group = hangguard.TaskGroup("searches", timeout=60)
        for query in queries:
            group.submit(search, query, name=f"search {query}")
        results = await group.join(return_exceptions=True)

    or, joining at the end of the block::

        async with hangguard.TaskGroup("searches") as group:
            group.submit(search, "a")

    ``return_exceptions=None`` (the default) leaves the choice to ``join`` (default
    ``False``); a group created with an explicit ``False``, or used with ``async with``,
    cancels the siblings as soon as a task fails, even before ``join`` is called.
    ``limit`` bounds how many tasks run at once; ``HANGGUARD_SERIAL=1`` runs them one by
    one in submit order and logs each start and outcome (the seed's debug mode).
    """

    def __init__(
        self,
        name: str = "group",
        *,
        timeout: float | None = None,
        return_exceptions: bool | None = None,
        limit: int | None = None,
    ) -> None:
        self.name = name
        self._timeout = None if timeout is None else check_timeout(timeout, "timeout")
        self._return_exceptions = return_exceptions
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be a whole number >= 1 or None, got {limit!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self._serial = _config.serial()
        self._limit = 1 if self._serial else limit
        self._limiter = Limiter(self._limit) if self._limit is not None else None
        self._tracer = _spans.get_tracer()
        _watchdog.maybe_watch()
        self._span: Span | None = None
        self._span_ctx: otel_context.Context | None = None

        self._tasks: list[asyncio.Task[Any]] = []
        self._fns: list[object] = []
        # The last function that passed submit's check: a fan-out submits one function
        # many times, and the check is a good part of submit's own cost.
        self._checked_fn: object = _NOT_CHECKED
        self._named_fn: object = _NOT_CHECKED
        self._fn_label = ""
        self._names: dict[int, str] = {}  # explicit names by index; defaults are derived
        self._index: dict[asyncio.Task[Any], int] = {}
        self._pending = 0
        self._failures: list[asyncio.Task[Any]] = []  # in the order they failed
        self._cancel_info: dict[asyncio.Task[Any], _CancelInfo] = {}
        self._task_spans: dict[asyncio.Task[Any], Span] = {}
        self._stacks_taken = 0
        self._fail_fast = return_exceptions is False
        self._waiter: asyncio.Future[None] | None = None
        self._joined = False
        self._body_task: asyncio.Task[Any] | None = None
        self._body_cancelled = False
        self._finished = False

    # -- submitting -------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        name: str | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[T]:
        """Start ``fn(*args, **kwargs)`` as a task of this group and return the task.

        ``fn`` must be a coroutine function (pass the function and its arguments, not a
        coroutine). ``name`` names the task in logs, spans and :class:`JoinTimeout`.
        """
        if self._joined:
            raise RuntimeError(f"task group {self.name!r} was already joined")
        if fn is not self._checked_fn and not is_coroutine_function(fn):
            if inspect.iscoroutine(fn):
                fn.close()  # it will never run: close it so Python does not warn later
                raise TypeError(
                    f"submit() takes a coroutine function and its arguments, not a coroutine: "
                    f"write submit(fn, *args), not submit(fn(*args)) (group {self.name!r})"
                )
            raise TypeError(
                f"submit() takes a coroutine function (async def), got {fn_name(fn)!r} "
                f"(group {self.name!r}); wrap blocking code with asyncio.to_thread"
            )
        self._checked_fn = fn
        index = len(self._tasks)
        if name is not None:
            self._names[index] = name
        loop = asyncio.get_running_loop()
        coro: Coroutine[Any, Any, T]
        if self._tracer is None and self._limiter is None:
            coro = fn(*args, **kwargs)  # type: ignore[assignment]
        else:
            if self._tracer is not None and self._span is None:
                self._start_span()
            coro = self._run(index, fn, args, kwargs)
        task = loop.create_task(coro, name=name)
        self._tasks.append(task)
        self._fns.append(fn)
        self._index[task] = index
        self._pending += 1
        task.add_done_callback(self._on_done)
        return task

    def task_name(self, index: int) -> str:
        """The name of the task submitted at ``index`` (explicit, else ``fn[index]``)."""
        name = self._names.get(index)
        if name is not None:
            return name
        fn = self._fns[index]
        if fn is not self._named_fn:  # one function submitted many times: name it once
            self._named_fn, self._fn_label = fn, fn_name(fn)
        return f"{self._fn_label}[{index}]"

    def __len__(self) -> int:
        return len(self._tasks)

    async def _run(self, index: int, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any) -> T:
        span: Span | None = None
        token: object = None
        task = asyncio.current_task()
        if self._tracer is not None and task is not None:
            span = self._task_span(index)
            self._task_spans[task] = span
            token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if self._limiter is None:
                return await fn(*args, **kwargs)
            await self._limiter.acquire()
            try:
                if not self._serial:
                    return await fn(*args, **kwargs)
                return await self._run_logged(index, fn, args, kwargs)
            finally:
                self._limiter.release()
        except asyncio.CancelledError:
            if span is not None and task not in self._cancel_info:
                # Not cancelled by the group (that is recorded when it cancels).
                span.add_event(
                    EVENT_CANCELLED, {ATTR_CANCEL_REASON: CANCEL_PARENT, ATTR_CANCEL_CAUSE: ""}
                )
            raise
        except BaseException as exc:
            if span is not None:
                _spans.record_failure(span, exc)
            raise
        finally:
            if span is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
                span.end()
                del self._task_spans[task]  # type: ignore[arg-type]

    def _task_span(self, index: int) -> Span:
        assert self._tracer is not None
        name = self.task_name(index)
        return self._tracer.start_span(
            SPAN_TASK.format(name),
            context=self._span_ctx,
            attributes={ATTR_TASK_NAME: name},
        )

    async def _run_logged(
        self, index: int, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any
    ) -> T:
        name = self.task_name(index)
        logger.info("serial: task %r started (group %r)", name, self.name)
        started = time.monotonic()
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            logger.info("serial: task %r cancelled after %.3fs", name, time.monotonic() - started)
            raise
        except BaseException as exc:
            # The traceback is logged once, by the group's done-callback.
            logger.info(
                "serial: task %r failed after %.3fs: %s: %s",
                name,
                time.monotonic() - started,
                type(exc).__name__,
                exc,
            )
            raise
        logger.info("serial: task %r succeeded in %.3fs", name, time.monotonic() - started)
        return result

    def _start_span(self) -> None:
        assert self._tracer is not None
        self._span = self._tracer.start_span(
            SPAN_GROUP.format(self.name), attributes={ATTR_GROUP_NAME: self.name}
        )
        if self._limit is not None:
            self._span.set_attribute(ATTR_GROUP_LIMIT, self._limit)
        if self._serial:
            self._span.set_attribute(ATTR_GROUP_SERIAL, True)
        self._span_ctx = trace.set_span_in_context(self._span)

    # -- completion -------------------------------------------------------------------

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._pending -= 1
        failed = False
        if not task.cancelled():
            exc = task.exception()  # also marks it retrieved: no "never retrieved" warning
            if exc is not None:
                failed = True
                self._failures.append(task)
                logger.error(
                    "task %r of group %r failed with %s",
                    self.task_name(self._index[task]),
                    self.name,
                    type(exc).__name__,
                    exc_info=exc,
                )
                if self._fail_fast and len(self._failures) == 1:
                    self._cancel_all(CANCEL_SIBLING_FAILED, self.task_name(self._index[task]))
                    if self._body_task is not None and not self._body_task.done():
                        # Like asyncio.TaskGroup: stop the body of ``async with`` too.
                        self._body_cancelled = True
                        self._body_task.cancel()
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and (self._pending == 0 or (failed and self._fail_fast))
        ):
            waiter.set_result(None)
        if self._finished:
            # Outcomes are counted once per group when join ends; a task that outlived
            # the join (it ignored its cancellation) is counted when it ends.
            _metrics.record_task_outcome(self._outcome(task, failed))

    def _outcome(self, task: asyncio.Task[Any], failed: bool) -> str:
        if failed:
            return _semconv.OUTCOME_FAILED
        if not task.cancelled():
            return _semconv.OUTCOME_OK
        info = self._cancel_info.get(task)
        # Cut off by the join's timeout or a deadline: a timeout, not a plain cancellation.
        if info is not None and info.reason in (CANCEL_TIMEOUT, CANCEL_DEADLINE):
            return _semconv.OUTCOME_TIMEOUT
        return _semconv.OUTCOME_CANCELLED

    def _cancel_all(self, reason: str, cause: str) -> int:
        """Cancel every unfinished task, noting why (and, for a few, where it was stuck)."""
        count = 0
        capture = self._tracer is not None
        message = f"hangguard: {reason} ({cause})"
        for task in self._tasks:
            if task.done():
                continue
            count += 1
            if task not in self._cancel_info:
                self._cancel_info[task] = _CancelInfo(reason, cause)
                if capture:
                    self._record_cancel_event(task, reason, cause)
            task.cancel(message)
        return count

    def _record_cancel_event(self, task: asyncio.Task[Any], reason: str, cause: str) -> None:
        attrs = {ATTR_CANCEL_REASON: reason, ATTR_CANCEL_CAUSE: cause}
        if self._stacks_taken < STACK_CAPTURES:
            self._stacks_taken += 1
            attrs[ATTR_TASK_STACK] = stack_of(task)
        span = self._task_spans.get(task)
        if span is not None:
            span.add_event(EVENT_CANCELLED, attrs)
            return
        # Cancelled before its first step: its coroutine will never run, so its span is
        # made (and ended) here, to carry the event.
        span = self._task_span(self._index[task])
        span.add_event(EVENT_CANCELLED, attrs)
        span.end()

    async def _wait_pending(self, timeout: float) -> None:
        """Wait until no task is pending, or ``timeout`` seconds pass."""
        if self._pending == 0:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = None if math.isinf(timeout) else loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    # -- joining ----------------------------------------------------------------------

    async def join(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> list[Any]:
        """Wait for every task; return their results in submit order.

        ``timeout`` (seconds) defaults to the group's, then ``HANGGUARD_JOIN_TIMEOUT``;
        the enclosing deadline caps it. See the class docstring for the semantics.
        """
        if self._joined:
            raise RuntimeError(f"task group {self.name!r} was already joined")
        # Arguments and env are read before anything changes: a bad value raises here and
        # leaves the group joinable.
        if timeout is not None:
            own = check_timeout(timeout, "timeout")
        elif self._timeout is not None:
            own = self._timeout
        else:
            own = _config.join_timeout()
        grace = _config.cancel_grace()
        self._joined = True
        mode = return_exceptions
        if mode is None:
            mode = bool(self._return_exceptions)
        self._fail_fast = not mode
        if self._span is not None and not math.isinf(own):
            self._span.set_attribute(ATTR_TIMEOUT_S, own)

        left = remaining()
        by_deadline = left <= own
        limit = min(own, left)
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        timed_out = False
        loop = asyncio.get_running_loop()
        due = loop.time() + limit  # to tell a join that fired late (a blocked loop)
        try:
            if self._fail_fast and self._failures:
                pass  # a task failed before join: go straight to cancelling the rest
            else:
                await self._wait_pending(limit)
                timed_out = self._pending > 0 and not (self._fail_fast and self._failures)
        except asyncio.CancelledError as cancel:
            fired = self._own_deadline_fired(cancel, task, cancelling)
            dl = current_deadline()
            if fired is not None or (dl is not None and remaining() <= 0):
                bound = fired or (dl.binding() if dl is not None else None)
                self._cancel_all(CANCEL_DEADLINE, (bound.name if bound else None) or "")
            else:
                self._cancel_all(CANCEL_PARENT, self.name)
            try:
                await self._finish_cancelled(grace)
            finally:
                if fired is None:
                    self._finish(timed_out=False)
            if fired is not None:
                # This task's own deadline fired: answer with the partial results rather
                # than a bare cancellation (the deadline's scope withdraws its cancel).
                late = _watchdog.late_note(loop, due)
                raise self._join_timeout(fired.name, fired.budget, late) from None
            raise

        if timed_out:
            late = _watchdog.late_note(loop, due)
            if by_deadline:
                current = current_deadline()
                bound = current.binding() if current is not None else None
                dname = bound.name if bound is not None else None
                budget = bound.budget if bound is not None else left
                self._cancel_all(CANCEL_DEADLINE, (dname or "") + late)
            else:
                dname, budget = f"join {self.name}", own
                self._cancel_all(CANCEL_TIMEOUT, self.name + late)
            await self._after_cancelling(grace, task, cancelling, timed_out=True)
            raise self._join_timeout(dname, budget, late)

        if self._fail_fast and self._failures:
            first = self._failures[0]
            n = self._cancel_all(CANCEL_SIBLING_FAILED, self.task_name(self._index[first]))
            if n:
                exc = first.exception()
                logger.warning(
                    "group %r: task %r failed with %s, cancelling %d remaining task(s)",
                    self.name,
                    self.task_name(self._index[first]),
                    type(exc).__name__,
                    n,
                )
            await self._after_cancelling(grace, task, cancelling, timed_out=False)
            self._finish(timed_out=False)
            error = first.exception()
            assert error is not None
            raise error

        self._finish(timed_out=False)
        return [outcome_of(t) for t in self._tasks]

    def _own_deadline_fired(
        self, cancel: asyncio.CancelledError, task: asyncio.Task[Any] | None, cancelling: int
    ) -> Deadline | None:
        """The deadline, when ``cancel`` is this task's own deadline scope firing (alone)."""
        dl = current_deadline()
        if dl is None or task is None or dl.enforced_in is not task:
            return None
        if task.cancelling() != cancelling + 1:
            return None  # someone else cancelled this task too: not ours to turn into data
        message = str(cancel.args[0]) if cancel.args else ""
        if remaining() <= 0 or message.startswith("hangguard deadline"):
            return dl.binding()
        return None

    async def _after_cancelling(
        self, grace: float, task: asyncio.Task[Any] | None, cancelling: int, *, timed_out: bool
    ) -> None:
        """Wait out the grace; if this task is cancelled meanwhile, finish the books first.

        When the cancellation is this task's own deadline firing, it is absorbed (the
        deadline's scope withdraws it) and the join ends as it was about to.
        """
        try:
            await self._finish_cancelled(grace)
        except asyncio.CancelledError as cancel:
            if self._own_deadline_fired(cancel, task, cancelling) is None:
                self._finish(timed_out=timed_out)
                raise

    def _join_timeout(
        self, deadline_name: str | None, budget: float, late: str = ""
    ) -> JoinTimeout:
        cancelled = self._cancel_info
        pending: list[str] = []
        results: list[Any] = []
        label = deadline_name or "(unnamed)"
        for i, t in enumerate(self._tasks):
            # A task that was cancelled but still returned or raised within the grace did
            # finish: its own outcome stands in its place.
            if t in cancelled and (not t.done() or t.cancelled()):
                name = self.task_name(i)
                pending.append(name)
                results.append(
                    DeadlineExceeded(
                        f"task {name!r} did not finish before {label!r}",
                        deadline_name=deadline_name,
                        budget=budget,
                    )
                )
            else:
                results.append(outcome_of(t))
        self._finish(timed_out=True)
        shown = ", ".join(pending[:5]) + (", ..." if len(pending) > 5 else "")
        budget_text = "no limit" if math.isinf(budget) else f"{budget:g}s"
        return JoinTimeout(
            f"group {self.name!r}: {len(pending)} of {len(self._tasks)} task(s) did not finish "
            f"before {label!r} ({budget_text}): {shown}{late}",
            deadline_name=deadline_name,
            budget=budget,
            results=results,
            pending=pending,
        )

    async def _finish_cancelled(self, grace: float) -> None:
        """Give cancelled tasks ``grace`` seconds to finish; report and keep any that won't."""
        await self._wait_pending(grace)
        if self._pending == 0:
            return
        stuck = [t for t in self._tasks if not t.done()]
        names = [self.task_name(self._index[t]) for t in stuck]
        logger.warning(
            "group %r: %d task(s) ignored cancellation for %gs and are left running: %s",
            self.name,
            len(stuck),
            grace,
            ", ".join(names),
        )
        if self._span is not None:
            self._span.add_event(
                EVENT_CANCEL_IGNORED, {ATTR_TASK_NAME: names, ATTR_CANCEL_GRACE_S: grace}
            )
        for t in stuck:
            _abandoned.add(t)
            t.add_done_callback(_abandoned.discard)

    def _finish(self, *, timed_out: bool) -> None:
        """Count the outcomes (one metric update per outcome) and end the group span."""
        if not self._finished:
            self._finished = True
            counts: collections.Counter[str] = collections.Counter(
                self._outcome(t, not t.cancelled() and t.exception() is not None)
                for t in self._tasks
                if t.done()
            )
            for outcome, n in counts.items():
                _metrics.record_task_outcome(outcome, n)
        span = self._span
        if span is None:
            return
        self._span = None
        failed = len(self._failures)
        cancelled = sum(1 for t in self._tasks if t.done() and t.cancelled())
        span.set_attribute(ATTR_GROUP_SIZE, len(self._tasks))
        span.set_attribute(ATTR_GROUP_FAILED, failed)
        span.set_attribute(ATTR_GROUP_CANCELLED, cancelled)
        if timed_out:
            span.set_attribute(ATTR_GROUP_TIMED_OUT, True)
            span.set_attribute(_semconv.ATTR_ERROR_TYPE, "timeout")
            span.set_status(trace.Status(trace.StatusCode.ERROR, "join timed out"))
        elif failed and self._fail_fast:
            first = self._failures[0].exception()
            assert first is not None
            _spans.record_failure(span, first)
        span.end()

    # -- async with -------------------------------------------------------------------

    async def __aenter__(self) -> TaskGroup:
        self._body_task = asyncio.current_task()
        if self._return_exceptions is None:
            self._fail_fast = True
        if self._tracer is not None and self._span is None:
            self._start_span()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        body = self._body_task
        self._body_task = None
        if self._body_cancelled and body is not None:
            body.uncancel()
            if exc_type is asyncio.CancelledError and body.cancelling() == 0:
                # The cancellation was ours (a task failed): join raises the failure.
                exc_type, exc = None, None
        if exc is not None:
            # The body failed or was cancelled: nothing more should run.
            self._joined = True
            self._cancel_all(CANCEL_PARENT, f"{self.name} body raised {type(exc).__name__}")
            try:
                await self._finish_cancelled(_grace_or_default())
            finally:
                self._finish(timed_out=False)
            return
        try:
            await self.join()
        except BaseException:
            if not self._joined:
                # join refused to start (a bad setting): its tasks must not run on unowned.
                self._joined = True
                self._cancel_all(CANCEL_PARENT, f"{self.name} join failed")
                try:
                    await self._finish_cancelled(_grace_or_default())
                finally:
                    self._finish(timed_out=False)
            raise


def _grace_or_default() -> float:
    """The cancel grace, on a path that is already raising another error."""
    try:
        return _config.cancel_grace()
    except ConfigError:
        logger.error("using the default cancel grace", exc_info=True)
        return _config.DEFAULT_CANCEL_GRACE


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
