"""The guarded task group: submit coroutines, join them without ever hanging.

It realises flowllm's ``submit_async_task`` / ``join_async_task`` done right: results in
submit order, the first failure raised as itself once every sibling is cancelled and
finished, a join that ends on time (its own timeout, ``HANGGUARD_JOIN_TIMEOUT`` or the
enclosing deadline, whichever is earliest, plus a bounded grace for tasks that ignore
their cancellation; with none of them set it waits, like ``gather``), every failure
logged once with its traceback, and every cancellation recorded with its cause.

Cancellation records scale: every cancelled task's span carries the reason and cause as
attributes (``hangguard.cancel.reason``, ``hangguard.cancel.cause``), while the
``hangguard.cancelled`` event (its timestamp and, for the first few, where the task was
stuck) is recorded for the first ``HANGGUARD_CANCEL_EVENTS`` cancelled tasks of a group;
the group span counts them all.

Every way a group ends (all done, a failure, a timeout, a deadline, the joiner
cancelled, the body of ``async with`` raising) goes through one shutdown routine:
cancel each unfinished task once, wait out one grace counted from that first cancel
(further cancellations of the joiner do not cut it short; they are re-raised after it),
report and detach the tasks that ignored it, then count the outcomes and end the span.

Untraced use (no SDK installed) adds one done-callback per task to a raw
``loop.create_task``; span work happens only when a real tracer provider is installed.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import functools
import inspect
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import MethodType, TracebackType
from typing import Any, Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from . import _config, _inflight, _late_timers, _metrics, _semconv, _spans, _watchdog
from ._cancel_record import CancelRecord, EventCap
from ._deadline import (
    Deadline,
    current_deadline,
    deadline_cancel_of,
    now,
)
from ._exceptions import JoinTimeout, unfinished_task
from ._group_core import (
    DONE,
    OPEN,
    SHUTTING_DOWN,
    GroupBase,
    child_state,
    end_group_span,
    grace_or_default,
    join_timeout,
    log_fail_fast,
    not_finished,
    record_outcomes,
    timeout_cut,
)
from ._limiter import Limiter
from ._semconv import (
    ATTR_CANCEL_GRACE_S,
    ATTR_TASK_NAME,
    ATTR_TASK_STACK,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    CANCEL_SIBLING_FAILED,
    CANCEL_TIMEOUT,
    EVENT_CANCEL_IGNORED,
)
from ._task_info import fn_name, is_coroutine_function, outcome_of, stack_of

__all__ = ["TaskGroup"]

logger = logging.getLogger("hangguard")

T = TypeVar("T")

#: Await stacks are captured for at most this many cancelled tasks per group (the first
#: of those that get an event), so that cancelling 10,000 tasks stays cheap.
STACK_CAPTURES: Final = 5

# Tasks that ignored their cancellation past the grace: kept referenced so they are not
# garbage collected mid-run, and their eventual outcome is still logged.
_abandoned: set[asyncio.Task[Any]] = set()

_NOT_CHECKED: Final = object()

_start_task_span: Final = _spans.start_task_span
_telemetry_failed: Final = _spans.telemetry_failed


class TaskGroup(GroupBase):
    """Run coroutines concurrently and join them within a bounded time.

    ``submit`` starts a task at once; ``join`` waits for all of them and returns their
    results in submit order. With ``return_exceptions=False`` the first failure is raised
    as itself, after every sibling has been cancelled and has finished; with ``True`` the
    exceptions stand in their tasks' places. On timeout (``timeout``, else
    ``HANGGUARD_JOIN_TIMEOUT``, capped by the enclosing :func:`hangguard.deadline`) the
    unfinished tasks are cancelled and :class:`JoinTimeout` carries the partial results::

        group = hangguard.TaskGroup("searches", timeout=60)
        for query in queries:
            group.submit_named(f"search {query}", search, query)
        results = await group.join(return_exceptions=True)

    or, joining at the end of the block, with the results read after it (``submit``
    returns each task, too)::

        async with hangguard.TaskGroup("searches") as group:
            first = group.submit(search, "a")
            group.submit(search, "b")
        results = group.results  # in submit order; first.result() is results[0]

    ``return_exceptions=None`` (the default) leaves the choice to ``join`` (default
    ``False``); a group created with an explicit ``False``, or used with ``async with``,
    cancels the siblings as soon as a task fails, even before ``join`` is called.
    ``limit`` bounds how many tasks run at once; ``HANGGUARD_SERIAL=1`` runs them one by
    one in submit order and logs each start and outcome (a debugging mode).

    Unlike ``asyncio.TaskGroup``, the group is joined explicitly with ``join`` (as
    flowllm's ``join_async_task``), and ``async with`` is optional.
    """

    _kind = "task group"

    #: Set by the guarded op on the group of its run: the op's join hands every failure
    #: it receives to its caller, so a failure is not logged when it happens but, once
    #: the join has ended, only if the join did not hand it over (see ``_op.py``). A
    #: failure after the join ended is logged when it happens, as in any group.
    _joiner_logs: bool = False

    def __init__(
        self,
        name: str = "group",
        *,
        timeout: float | None = None,
        return_exceptions: bool | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, return_exceptions=return_exceptions, limit=limit)
        self._limiter = Limiter(self._settings.limit) if self._settings.limit is not None else None
        _watchdog.maybe_watch()

        self._tasks: list[asyncio.Task[Any]] = []
        # The submitted functions as runs: the index where each run starts, and its
        # function. A fan-out submits one function many times, so submit records (and
        # checks) a function only when it differs from the last one.
        self._run_starts: list[int] = []
        self._run_fns: list[object] = []
        # The last function that passed submit's check (the last run's function).
        self._checked_fn: object = _NOT_CHECKED
        self._named_fn: object = _NOT_CHECKED
        self._fn_label = ""
        self._names: dict[int, str] = {}  # explicit names by index; defaults are derived
        # Task -> index, built only when asked (a failure, a cancel, a reader): filling it
        # at every submit cost a dict store per task.
        self._index: dict[asyncio.Task[Any], int] = {}
        # Bound once: a bound method made at every submit costs an allocation per task.
        # _finish drops it, so a joined group holds no cycle through it.
        self._done_cb: Callable[[asyncio.Task[Any]], None] | None = self._on_done
        self._pending = 0
        self._failures: list[asyncio.Task[Any]] = []  # in the order they failed
        # Tasks seen cancelled by _on_done: with none (and no failure) every outcome is
        # ok, and join and _finish skip their per-task look at each outcome.
        self._n_cancelled = 0
        # The one cancel record of the group's cancel-alls, while only one has cancelled
        # anything (None before, or once a second did): with it, a group whose every task
        # it cancelled counts them all under one outcome, without a look at each.
        self._only_record: CancelRecord | None = None
        self._records = 0
        self._cancel_info: dict[asyncio.Task[Any], CancelRecord] = {}
        self._cancelled_at: float | None = None  # loop time of the first cancel: grace start
        self._task_spans: dict[asyncio.Task[Any], Span] = {}
        self._unstarted: dict[asyncio.Task[Any], Coroutine[Any, Any, Any]] = {}
        # Tasks waiting for the limit (only with ``limit``): one cancelled there never ran.
        self._held: set[asyncio.Task[Any]] = set()
        self._stacks_taken = 0
        # hangguard.cancelled events this group may still record (read only when traced:
        # a bad HANGGUARD_CANCEL_EVENTS fails the constructor, not a cancel later).
        self._events = EventCap(_config.cancel_events() if self._tracer is not None else 0)
        self._abandoned_count = 0
        self._waiter: asyncio.Future[None] | None = None
        # ``async with``: the body's task, and whether the group cancelled it (a failure).
        self._body_task: asyncio.Task[Any] | None = None
        self._body_cancelled = False
        self._results: list[Any] | None = None  # what join returned, once it has

    # -- submitting -------------------------------------------------------------------

    def submit(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> asyncio.Task[T]:
        """Start ``fn(*args, **kwargs)`` as a task of this group and return the task.

        ``fn`` must be a coroutine function (pass the function and its arguments, not a
        coroutine). Every keyword goes to ``fn`` (``name=`` too); the task is named
        ``fn[index]`` in logs, spans and :class:`JoinTimeout`; to name it, use
        :meth:`submit_named`.
        """
        return self._submit(None, fn, args, kwargs)

    def submit_named(
        self, name: str, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> asyncio.Task[T]:
        """Like :meth:`submit`, naming the task ``name`` in logs, spans and errors::

        group.submit_named(f"search {query}", search, query, name="kept for search")
        """
        if not isinstance(name, str):
            raise TypeError(f"submit_named() takes the task name first, got {name!r}")
        return self._submit(name, fn, args, kwargs)

    def _submit(
        self,
        name: str | None,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> asyncio.Task[T]:
        if self._state is not OPEN:
            raise self._already_joined()
        index = len(self._tasks)
        checked = self._checked_fn
        # ``obj.method`` is a new bound method at each access, equal to the last one: a
        # fan-out over one object's method is one run too (the equality never raises).
        if fn is not checked and (type(fn) is not MethodType or fn != checked):
            self._check_fn(fn, index)
        loop = asyncio.get_running_loop()
        # The call is made here on every path, so a call with bad arguments raises at
        # submit whether the group is traced or not (telemetry never changes an outcome).
        work: Coroutine[Any, Any, T] = fn(*args, **kwargs)  # type: ignore[assignment]
        if self._entry is None:
            self._start_group()
        coro = work
        if self._tracer is not None or self._limiter is not None:
            coro = self._run(index, work)
        # Recorded before create_task (the function's run in _check_fn too): with an
        # eager task factory (3.12+) the task's first step runs inside create_task, and
        # its span is named from these. A call that raises takes the name back; a run it
        # started is harmless, as the next submit at this index either is that function
        # or starts a later run there, which task_name's search finds first.
        if name is not None:
            self._names[index] = name
        try:
            task = loop.create_task(coro, name=name)
        except BaseException:
            self._names.pop(index, None)
            _close(work)
            if coro is not work:
                _close(coro)
            raise
        if coro is not work:
            # Closed by _on_done if the task is cancelled before _run ever awaits it.
            self._unstarted[task] = work
        self._tasks.append(task)
        self._pending += 1
        task.add_done_callback(self._done_cb or self._on_done)
        return task

    def _check_fn(self, fn: object, index: int) -> None:
        """Check a function submit has not seen last, and start its run at ``index``."""
        if not is_coroutine_function(fn):
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
        self._run_starts.append(index)
        self._run_fns.append(fn)

    def _index_of(self, task: asyncio.Task[Any]) -> int:
        """The submit index of one of the group's tasks (the map is filled up lazily)."""
        return self._indices()[task]

    def _indices(self) -> dict[asyncio.Task[Any], int]:
        index, tasks = self._index, self._tasks
        for i in range(len(index), len(tasks)):
            index[tasks[i]] = i
        return index

    def task_name(self, index: int) -> str:
        """The name of the task submitted at ``index`` (explicit, else ``fn[index]``)."""
        name = self._names.get(index)
        if name is not None:
            return name
        starts, fns = self._run_starts, self._run_fns
        # Most tasks belong to the last run (a fan-out has one): no search for them.
        fn = fns[-1] if index >= starts[-1] else fns[bisect.bisect_right(starts, index) - 1]
        if fn is not self._named_fn:  # one function submitted many times: name it once
            self._named_fn, self._fn_label = fn, fn_name(fn)
        return f"{self._fn_label}[{index}]"

    @property
    def results(self) -> list[Any]:
        """The results in submit order, as :meth:`join` returned them (a new list).

        For ``async with``, whose exit joins the group: read it after the block. Before
        the join has returned, or when it raised instead (a failure, a timeout, the body
        or the caller cancelled), it raises :class:`RuntimeError` saying which; a
        :class:`JoinTimeout` carries the partial results in its ``results``.
        """
        if self._results is not None:
            return list(self._results)
        if self._state is not DONE:
            raise RuntimeError(
                f"task group {self.name!r} is not done yet ({self._state.value}): its results "
                "are there once join() has returned, or after the `async with` block"
            )
        raise RuntimeError(
            f"task group {self.name!r} has no results: its join raised, or the body of "
            "`async with` did (see that exception; a JoinTimeout holds the partial results "
            "in its .results)"
        )

    def never_joined(self) -> bool:
        """Whether no join (nor ``async with`` exit) has begun: its tasks are nobody's yet."""
        return self._state is OPEN

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task: object) -> bool:
        """Whether ``task`` is one of this group's tasks."""
        return task in self._indices()

    @_watchdog.holds_span
    async def _run(self, index: int, work: Coroutine[Any, Any, T]) -> T:
        span: Span | None = None
        token: object = None
        task = asyncio.current_task()
        self._unstarted.pop(task, None)  # type: ignore[arg-type]
        tracer = self._tracer
        if tracer is not None and task is not None:
            # try/except rather than `with _spans.contained():` (same effect): this runs
            # once per task of every traced group, and the with-statement is two calls more.
            try:
                span = _start_task_span(tracer, self.task_name(index), self._span_ctx)
                self._task_spans[task] = span
                token = otel_context.attach(trace.set_span_in_context(span))
            except Exception as exc:
                _telemetry_failed(exc)
        try:
            if self._limiter is None:
                return await work
            held = self._held
            held.add(task)  # type: ignore[arg-type]
            try:
                await self._limiter.acquire()
            except BaseException:
                _close(work)  # cancelled while queued: it will never run (stays held)
                raise
            held.discard(task)
            try:
                if not self._settings.serial:
                    return await work
                return await self._run_logged(index, work)
            finally:
                self._limiter.release()
        except asyncio.CancelledError as exc:
            if span is not None and task not in self._cancel_info:
                # Not cancelled by the group (that is recorded when it cancels).
                with _spans.contained():
                    CancelRecord.of(deadline_cancel_of(exc)).write(span, cap=self._events)
            raise
        except BaseException as exc:
            if span is not None:
                _spans.record_failure(span, exc)
            raise
        finally:
            if span is not None:
                try:
                    otel_context.detach(token)  # type: ignore[arg-type]
                    del self._task_spans[task]  # type: ignore[arg-type]
                    span.end()
                except Exception as exc:
                    _telemetry_failed(exc)

    def _task_span(self, index: int, extra: dict[str, str] | None = None) -> Span:
        assert self._tracer is not None
        return _start_task_span(self._tracer, self.task_name(index), self._span_ctx, extra)

    async def _run_logged(self, index: int, work: Coroutine[Any, Any, T]) -> T:
        name = self.task_name(index)
        logger.info("serial: task %r started (group %r)", name, self.name)
        started = time.monotonic()
        try:
            result = await work
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
                _spans.safe_str(exc),
            )
            raise
        logger.info("serial: task %r succeeded in %.3fs", name, time.monotonic() - started)
        return result

    # -- completion -------------------------------------------------------------------

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._pending -= 1
        if self._unstarted:
            work = self._unstarted.pop(task, None)
            if work is not None:  # cancelled before its first step: never awaited
                _close(work)
        failed = False
        if task.cancelled():
            self._n_cancelled += 1
        else:
            exc = task.exception()  # also marks it retrieved: no "never retrieved" warning
            if exc is not None:
                failed = True
                self._failures.append(task)
                if not self._joiner_logs or self._state is DONE:
                    self._log_failure(task, exc)
                if self._fail_fast and len(self._failures) == 1:
                    self._cancel_for_failure()
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and (self._pending == 0 or (failed and self._fail_fast))
        ):
            waiter.set_result(None)
        if self._state is DONE:
            # Outcomes are counted once per group when join ends; a task that outlived
            # the join (it ignored its cancellation) is counted when it ends.
            _metrics.record_task_outcome(self._outcome(task, failed))

    def _log_failure(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        """The one ERROR, with its traceback, of a task that failed."""
        logger.error(
            "task %r of group %r failed with %s",
            self.task_name(self._index_of(task)),
            self.name,
            type(exc).__name__,
            exc_info=exc,
        )

    def _cancel_for_failure(self) -> None:
        """The first failure in fail-fast mode: cancel the siblings and the body, once."""
        self._cancel_all(CANCEL_SIBLING_FAILED, self.task_name(self._index_of(self._failures[0])))
        body = self._body_task
        if body is not None and not body.done() and not self._body_cancelled:
            # Like asyncio.TaskGroup: stop the body of ``async with`` too.
            self._body_cancelled = True
            body.cancel()

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
        """Cancel every unfinished task not cancelled yet, once, noting why.

        A task is cancelled at most once by its group (as ``asyncio.TaskGroup`` does): a
        second cancel would cut its cleanup short, and a task that is itself joining a
        nested group would stop waiting for its own children. A failure that triggers
        the cancel is announced with one WARNING naming it and the count.
        """
        info = CancelRecord(reason, cause)
        cancel_info = self._cancel_info
        # The reason travels in the message too: a nested op's span reads it as the cause.
        message = f"hangguard: {reason} ({cause})"
        todo = (
            [t for t in self._tasks if not t.done() and t not in cancel_info]
            if cancel_info
            else [t for t in self._tasks if not t.done()]
        )
        count = len(todo)
        if self._tracer is not None and todo:
            with _spans.contained():  # a failing span processor must not stop the cancel
                self._record_cancels(todo, info)
        for task in todo:
            cancel_info[task] = info
            task.cancel(message)
        if count:
            self._records += 1
            self._only_record = info if self._records == 1 else None
        if count and self._cancelled_at is None:
            self._cancelled_at = asyncio.get_running_loop().time()
        if count and reason == CANCEL_SIBLING_FAILED:
            log_fail_fast(self.name, cause, self._failures[0].exception(), count)
        return count

    def _record_cancels(self, tasks: list[asyncio.Task[Any]], record: CancelRecord) -> None:
        """Put the reason and cause on each task's span; an event on the first few.

        The attributes are cheap and go on every span. The ``hangguard.cancelled`` event
        (about 14 us with its timestamp) goes to the first ``HANGGUARD_CANCEL_EVENTS`` of
        the group in submit order. Tasks start in submit order, so those that ran (whose
        stacks say where they are stuck) come before those cancelled before their first
        step, which have nothing to show.
        """
        spans = self._task_spans
        cap = self._events
        for task in tasks:
            span = spans.get(task)
            if span is None:
                # Cancelled before its first step: its coroutine will never run, so its
                # span is made (and ended) here, to carry the record.
                span = self._task_span(self._index_of(task), record.attrs())
                record.write(span, cap=cap, on_span=False)
                span.end()
                continue
            stack = None
            if self._stacks_taken < STACK_CAPTURES:
                stack = functools.partial(self._stack_of, task)
            record.write(span, cap=cap, extra=stack)

    def _stack_of(self, task: asyncio.Task[Any]) -> dict[str, AttributeValue]:
        """Where a cancelled task is stuck, for its event (the first few of a group)."""
        self._stacks_taken += 1
        return {ATTR_TASK_STACK: stack_of(task)}

    async def _wait_pending(self, timeout: float) -> None:
        """Wait until no task is pending (or, failing fast, one fails), or ``timeout`` passes."""
        if self._pending == 0 or timeout <= 0:
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

    # -- the one shutdown routine -----------------------------------------------------

    async def _shutdown(
        self, reason: str, cause: str, grace: float, *, timed_out: bool
    ) -> asyncio.CancelledError | None:
        """Cancel what is left, wait out the grace, report the stuck, close the books.

        Every path that ends the group comes here. The grace counts from the group's
        first cancel (a fail-fast failure may have started it before join). A
        cancellation of the calling task meanwhile does not cut the wait short: it is
        returned, for the caller to re-raise once the books are closed.
        """
        self._state = SHUTTING_DOWN
        caught: asyncio.CancelledError | None = None
        try:
            self._cancel_all(reason, cause)
            loop = asyncio.get_running_loop()
            started = self._cancelled_at if self._cancelled_at is not None else loop.time()
            end = started + grace
            while self._pending:
                left = end - loop.time()
                if left <= 0:
                    break
                try:
                    await self._wait_pending(left)
                except asyncio.CancelledError as cancel:
                    caught = cancel
            if self._pending:
                self._report_stuck(grace)
        finally:
            self._finish(timed_out=timed_out)
        return caught

    def _report_stuck(self, grace: float) -> None:
        """Name the tasks that ignored their cancellation, and let them go (see _detach)."""
        stuck = [t for t in self._tasks if not t.done()]
        names = [self.task_name(self._index_of(t)) for t in stuck]
        logger.warning(
            "group %r: %d task(s) ignored cancellation for %gs and are left running, "
            "detached from the event loop so that it can close: %s",
            self.name,
            len(stuck),
            grace,
            ", ".join(names),
        )
        if self._span is not None:
            self._span.add_event(
                EVENT_CANCEL_IGNORED, {ATTR_TASK_NAME: names, ATTR_CANCEL_GRACE_S: grace}
            )
        self._abandoned_count = len(stuck)
        for t, name in zip(stuck, names, strict=True):
            _abandoned.add(t)
            _abandoned_names[t] = name
            t.add_done_callback(_forget_abandoned)
            _detach(t)
        _list_abandoned()

    def _finish(self, *, timed_out: bool) -> None:
        """Count the outcomes (one metric update per outcome) and end the group span."""
        if not self._mark_done():
            return
        self._done_cb = None
        self._unregister()
        all_ok = self._all_ok()
        total = len(self._tasks)
        all_cut = self._all_cancelled_by_one_record()
        if all_ok:  # the common case, counted without a look at each task
            record_outcomes({_semconv.OUTCOME_OK: total})
        elif all_cut is not None:  # a mass cancel: one outcome for all
            record_outcomes({all_cut: total})
        else:
            record_outcomes(
                collections.Counter(
                    self._outcome(t, not t.cancelled() and t.exception() is not None)
                    for t in self._tasks
                    if t.done()
                )
            )
        span = self._span
        if span is None:
            return
        self._span = None
        cancelled = total if all_cut is not None else 0
        ignored = 0
        cancel_info = self._cancel_info
        for t in () if all_ok or all_cut is not None else self._tasks:
            if t.done() and t.cancelled():
                cancelled += 1
            elif cancel_info and t in cancel_info:
                ignored += 1  # cancelled by the group, yet it returned, raised or runs on
        fail_fast = self._failures and self._fail_fast
        end_group_span(
            span,
            size=len(self._tasks),
            failed=len(self._failures),
            cancelled=cancelled,
            timed_out=timed_out,
            first_failure=self._failures[0].exception() if fail_fast else None,
            ignored=ignored,
            abandoned=self._abandoned_count,
        )

    def _all_ok(self) -> bool:
        """Whether every task has ended and returned: none pending, failed or cancelled.

        Every task's done-callback has run then (``_pending`` counts them), so each
        outcome is its result; a group that cancelled anything is never all ok.
        """
        return not (self._pending or self._failures or self._n_cancelled or self._cancel_info)

    def _all_cancelled_by_one_record(self) -> str | None:
        """The one outcome of every task, when the group cancelled them all in one go.

        All ended cancelled (their done-callbacks counted them), every one of them by the
        group, all under its one record: each one's outcome is that record's.
        """
        record = self._only_record
        n = len(self._tasks)
        if (
            record is None
            or self._pending
            or self._failures
            or self._n_cancelled != n
            or len(self._cancel_info) != n
        ):
            return None
        if record.reason in (CANCEL_TIMEOUT, CANCEL_DEADLINE):
            return _semconv.OUTCOME_TIMEOUT
        return _semconv.OUTCOME_CANCELLED

    # -- joining ----------------------------------------------------------------------

    async def join(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> list[Any]:
        """Wait for every task; return their results in submit order.

        ``timeout`` (seconds) defaults to the group's, then ``HANGGUARD_JOIN_TIMEOUT``;
        the enclosing deadline caps it. See the class docstring for the semantics.
        """
        if self._state is not OPEN:
            raise self._already_joined()
        task = asyncio.current_task()
        # A scan, not the task map: building the map here would cost what submit saves.
        # Only a task not done yet can be running this join.
        if task is not None and self._pending and task in self._tasks:
            raise RuntimeError(
                f"task group {self.name!r} joined from one of its own tasks "
                f"({self.task_name(self._index_of(task))!r}): it would wait for itself"
            )
        start = self._begin_join(timeout, return_exceptions)
        own, grace, left, by_deadline = start.own, start.grace, start.left, start.by_deadline
        if self._entry is not None:
            self._entry.deadline = now() + start.limit
        cancelling = task.cancelling() if task is not None else 0
        cancel: asyncio.CancelledError | None = None
        loop = asyncio.get_running_loop()
        due = loop.time() + min(own, left)  # to tell a join that fired late (a blocked loop)
        try:
            if not (self._fail_fast and self._failures):
                await self._wait_pending(min(own, left))
        except asyncio.CancelledError as exc:
            cancel = exc

        if cancel is None and self._pending == 0 and not (self._fail_fast and self._failures):
            all_ok = self._all_ok()
            self._finish(timed_out=False)
            tasks = self._tasks
            results = self._results = (
                [t.result() for t in tasks] if all_ok else [outcome_of(t) for t in tasks]
            )
            return results
        # Why the wait ended decides the shutdown's reason and what join raises after it.
        fired = None if cancel is None else self._own_deadline_fired(cancel, task, cancelling)
        reason, cause, timeout_of = self._why_stopped(cancel, fired, own, left, by_deadline)
        late = _late_timers.late_note(loop, due) if timeout_of is not None else ""
        later = await self._shutdown(reason, cause + late, grace, timed_out=timeout_of is not None)
        if later is not None and self._own_deadline_fired(later, task, cancelling) is None:
            raise later  # the joiner was cancelled during the grace: that wins, after it
        if cancel is not None and fired is None:
            raise cancel
        if timeout_of is not None:
            raise self._join_timeout(*timeout_of, late) from None
        error = self._failures[0].exception()
        assert error is not None
        raise error

    def _why_stopped(
        self,
        cancel: asyncio.CancelledError | None,
        fired: Deadline | None,
        own: float,
        left: float,
        by_deadline: bool,
    ) -> tuple[str, str, tuple[str | None, float] | None]:
        """The cancel reason and cause for the shutdown, and the (deadline name, budget)
        of the :class:`JoinTimeout` to raise after it, if the join timed out."""
        if fired is not None:  # this task's own deadline fired: answered with data
            return CANCEL_DEADLINE, fired.name or "", (fired.name, fired.budget)
        if cancel is not None:  # an enclosing deadline (here or in a parent), else the parent
            record = CancelRecord.of_joiner(cancel, self.name)
            return record.reason, record.cause, None
        if self._fail_fast and self._failures:
            return CANCEL_SIBLING_FAILED, self.task_name(self._index_of(self._failures[0])), None
        cut = timeout_cut(self.name, own, left, by_deadline)
        return cut.reason, cut.cause, (cut.deadline_name, cut.budget)

    def _own_deadline_fired(
        self, cancel: asyncio.CancelledError, task: asyncio.Task[Any] | None, cancelling: int
    ) -> Deadline | None:
        """The deadline, when ``cancel`` is this task's own deadline scope firing (alone)."""
        dl = current_deadline()
        if dl is None or task is None or dl.enforced_in is not task:
            return None
        if task.cancelling() != cancelling + 1:
            return None  # someone else cancelled this task too: not ours to turn into data
        # Only the deadline's own cancel carries its DeadlineCancel: a cancel that merely
        # arrives after the deadline's time (before its timer ran) is someone else's.
        if deadline_cancel_of(cancel) is not None:
            return dl.binding()
        return None

    def _join_timeout(
        self, deadline_name: str | None, budget: float, late: str = ""
    ) -> JoinTimeout:
        cancelled = self._cancel_info
        tasks = self._tasks
        # Which tasks did not finish, now: the results are made from this snapshot when
        # first read (a task that ignores its cancel may still end later). Made here,
        # 10,000 of them set off a full garbage collection inside the join's return.
        names: dict[int, str] = {}  # index -> name of each task that did not finish
        held_back: set[int] = set()
        held = self._held
        for i, t in enumerate(tasks):
            # A task that was cancelled but still returned or raised within the grace did
            # finish: its own outcome stands in its place.
            if t in cancelled and (not t.done() or t.cancelled()):
                names[i] = self.task_name(i)
                if held and t in held:
                    held_back.add(i)
        pending = list(names.values())
        held_by = self._settings.held_text()

        def make_results() -> list[Any]:
            # The message's tail is the same for every task (a large group gives up on
            # 100,000 at once): formatted once, like not_finished's.
            label = deadline_name or "(unnamed)"
            unfinished = f" did not finish before {label!r}"
            results: list[Any] = []
            for i, t in enumerate(tasks):
                name = names.get(i)
                if name is None:
                    results.append(outcome_of(t))  # it had finished: its outcome is fixed
                elif i in held_back:
                    why = f"was cancelled before it started (held back by {held_by}) at"
                    results.append(not_finished(f"task {name!r} {why}", deadline_name, budget))
                else:
                    results.append(
                        unfinished_task(f"task {name!r}{unfinished}", deadline_name, budget)
                    )
            return results

        return join_timeout(
            self.name,
            total=len(tasks),
            results=make_results,
            pending=pending,
            deadline_name=deadline_name,
            budget=budget,
            late=late,
        )

    # -- async with -------------------------------------------------------------------

    async def __aenter__(self) -> TaskGroup:
        self._body_task = asyncio.current_task()
        self._enter_block()
        return self

    # -- the in-flight registry ---------------------------------------------------------

    def _children(self) -> list[_inflight.Entry]:
        """One entry per unfinished task, with its state (called by readers, any thread)."""
        entry = self._entry
        if entry is None:
            return []
        cancelled_at = self._cancelled_at
        grace_over = False
        if cancelled_at is not None:
            try:
                loop = self._tasks[0].get_loop()
                grace_over = loop.time() >= cancelled_at + self._grace
            except (IndexError, RuntimeError):
                pass
        cancel_info = self._cancel_info
        # Read once per read, not per task: a reader lists every unfinished task.
        start, started_at = now(), time.time()
        child = _inflight.Entry.child
        frames = _inflight.task_frames
        running = _inflight.RUNNING
        out: list[_inflight.Entry] = []
        for i, t in enumerate(list(self._tasks)):
            if t.done():
                continue
            if cancel_info or t in _abandoned:
                state = child_state(
                    abandoned=t in _abandoned, cancelled=t in cancel_info, grace_over=grace_over
                )
            else:
                state = running
            out.append(
                child(
                    entry,
                    self.task_name(i),
                    functools.partial(frames, t),
                    state,
                    start=start,
                    started_at=started_at,
                )
            )
        return out

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
            later = await self._shutdown(
                CANCEL_PARENT,
                f"{self.name} body raised {type(exc).__name__}",
                grace_or_default(),
                timed_out=False,
            )
            if later is not None and not isinstance(exc, asyncio.CancelledError):
                raise later  # cancelled while waiting: never swallowed
            return
        try:
            await self.join()
        except BaseException:
            if self._state is OPEN:
                # join refused to start (a bad setting): its tasks must not run on unowned.
                later = await self._shutdown(
                    CANCEL_PARENT, f"{self.name} join failed", grace_or_default(), timed_out=False
                )
                if later is not None:
                    raise later from None
            raise


def _forget_abandoned(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    _abandoned_names.pop(task, None)
    global _abandoned_entry
    if not _abandoned and _abandoned_entry is not None:
        _inflight.discard(_abandoned_entry)
        _abandoned_entry = None


def _list_abandoned() -> None:
    """Keep one registry entry for every group's abandoned tasks while any still runs.

    A group is done when its join ends, but what it left running stays listed (state
    ``abandoned``) until it really ends.
    """
    global _abandoned_entry
    if _abandoned_entry is None:
        _abandoned_entry = _inflight.add(
            _inflight.Entry(_inflight.GROUP, "abandoned tasks", children=_abandoned_children)
        )


def _abandoned_children() -> list[_inflight.Entry]:
    """The tasks abandoned past their group's join that still run (readers, any thread)."""
    out: list[_inflight.Entry] = []
    for t, name in list(_abandoned_names.items()):
        if t.done():
            continue
        kid = _inflight.Entry(
            _inflight.TASK,
            name,
            parent=_abandoned_entry,
            where=lambda t=t: _inflight.task_frames(t),  # type: ignore[misc]
        )
        kid.state = _inflight.ABANDONED
        out.append(kid)
    return out


_abandoned_names: dict[asyncio.Task[Any], str] = {}
_abandoned_entry: _inflight.Entry | None = None


def _detach(task: asyncio.Task[Any]) -> None:
    """Take a task that ignored its cancellation out of ``asyncio.all_tasks()``.

    ``asyncio.run`` ends by cancelling every task in ``all_tasks()`` and waiting for all of
    them, with no bound: one task that ignores cancellation forever would keep a Ctrl-C'd
    process alive until a second Ctrl-C. Detached, it still runs while the loop does (and
    is logged when it ends), but the loop can close without it. CPython 3.11 (tested),
    3.12 and 3.13 keep that registry in ``asyncio.tasks``; 3.14 keeps C tasks in a
    per-thread list this hook does not reach, and there nothing is detached.
    """
    unregister = getattr(sys.modules["asyncio.tasks"], "_unregister_task", None)
    if unregister is not None:
        unregister(task)


def _close(coro: object) -> None:
    """Close a coroutine that will never run, so Python does not warn it was never awaited."""
    close = getattr(coro, "close", None)
    if callable(close):
        close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
