"""Sync code and threads with the task group's guarantees, as far as threads allow.

:class:`ThreadGroup` is the thread counterpart of :class:`~hangguard.TaskGroup` (results in
submit order, partial results on :class:`JoinTimeout`, each failure logged once, ``limit``,
``HANGGUARD_SERIAL``), :func:`to_thread` is ``asyncio.to_thread`` bounded by the deadline,
and :func:`checkpoint` lets a long loop in a thread stop when it is no longer wanted.

A thread cannot be killed. When a join times out or a task fails, work that has not
started is cancelled (its slot says so), and threads that are running are *abandoned*:
the join returns on time, each abandoned thread gets a ``hangguard.cancelled`` record with
its current stack, and is counted (span attribute and metric). It goes on running until
its blocking call returns; its later outcome is logged once. ``checkpoint()`` raises in
it from then on. The current deadline and OpenTelemetry context travel into every thread
(one context copy per submit), so ``hangguard.remaining()`` and nested spans work there.

Without an executor of their own, groups and ``to_thread`` share one pool of daemon
threads (daemon, so an abandoned thread never holds up the interpreter's exit), which
grows by one worker for each thread it abandoned while that thread is still stuck, so
abandoned threads never starve later work. A given executor is used as it is: a task
queued behind stuck threads there is bounded by its deadline and fails with "no free
worker" instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from . import _inflight, _metrics, _semconv, _spans, _watchdog
from ._cancel_record import CancelRecord
from ._deadline import Deadline, current_deadline, now, remaining
from ._exceptions import DeadlineExceeded, JoinTimeout, ThreadCancelled
from ._group_core import (
    DONE,
    OPEN,
    SHUTTING_DOWN,
    GroupBase,
    budget_text,
    child_state,
    end_group_span,
    join_timeout,
    log_fail_fast,
    not_finished,
    record_outcomes,
    timeout_cut,
)
from ._semconv import (
    ATTR_TASK_NAME,
    ATTR_TASK_STACK,
    ATTR_THREAD_ID,
    ATTR_THREAD_NAME,
    CANCEL_DEADLINE,
    CANCEL_NO_FREE_WORKER,
    CANCEL_PARENT,
    CANCEL_SIBLING_FAILED,
    CANCEL_TIMEOUT,
)
from ._task_info import fn_name, is_coroutine_function, thread_stacks

__all__ = ["ThreadGroup", "checkpoint", "to_thread"]

logger = logging.getLogger("hangguard")

T = TypeVar("T")

#: Stacks are captured for at most this many abandoned threads per join (the rest get the
#: record without one), so abandoning 10,000 stays cheap.
STACK_CAPTURES: Final = 20
#: How many abandoned threads the one warning of a join lists with their stacks.
_LOGGED_STACKS: Final = 3

# Slot states.
_QUEUED: Final = 0  # waiting for the group's limit
_SUBMITTED: Final = 1  # handed to the executor (started or not: its future knows)
_RUNNING: Final = 2  # the executor refused it: failing at once
_DONE: Final = 3
_CANCELLED: Final = 4  # never started
_ABANDONED: Final = 5  # still running, given up on

_NOTHING: Final = object()


class _Cancel:
    """Why a thread's work is no longer wanted; what ``checkpoint()`` raises there."""

    __slots__ = ("budget", "cause", "deadline_name", "reason")

    def __init__(
        self, reason: str, cause: str, *, deadline_name: str | None = None, budget: float = 0.0
    ) -> None:
        self.reason = reason
        self.cause = cause
        self.deadline_name = deadline_name
        self.budget = budget

    def exception(self) -> Exception:
        if self.reason in (CANCEL_TIMEOUT, CANCEL_DEADLINE):
            return DeadlineExceeded(
                f"{self.cause}: this thread was given up on; stop at this checkpoint",
                deadline_name=self.deadline_name,
                budget=self.budget,
            )
        return ThreadCancelled(
            f"{self.cause}: this thread was given up on ({self.reason}); stop at this checkpoint",
            reason=self.reason,
            cause=self.cause,
        )


class _Slot:
    """One submitted call: its place in the results, and what became of it."""

    __slots__ = (
        "acked",
        "args",
        "cancel",
        "context",
        "failed",
        "fn",
        "future",
        "held",
        "index",
        "kwargs",
        "outcome",
        "span",
        "state",
        "submitted_at",
        "thread_id",
    )

    def __init__(self, index: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self.index = index
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.state = _QUEUED
        self.future: Future[Any] | None = None
        self.thread_id: int | None = None
        self.cancel: _Cancel | None = None
        # What checkpoint() raised in it: only that exception acknowledges a cancel; an
        # error of its own (a nested group's JoinTimeout, say) stays a failure.
        self.acked: BaseException | None = None
        self.held = False  # it waited for the group's limit before it was handed on
        self.outcome: Any = _NOTHING
        self.failed = False
        self.span: Span | None = None
        self.submitted_at = 0.0
        # A call held back by the limit runs in the context of its own submit, not in that
        # of the call whose end hands it on (which may have set context variables).
        self.context: contextvars.Context | None = None


# The slot of the call running in this thread (set in the copied context of each call).
_current_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar(
    "hangguard_thread_slot", default=None
)


def checkpoint() -> None:
    """Raise here if the work running in this thread is no longer wanted.

    A thread cannot be cancelled from outside, so a long loop calls this now and then:
    it raises :class:`DeadlineExceeded` when the current deadline has passed or the
    group's join timed out, and :class:`ThreadCancelled` when the group gave up for
    another reason (a sibling failed, the awaiting task was cancelled)::

        def crunch(rows):
            for row in rows:
                hangguard.checkpoint()
                handle(row)

    Elsewhere (the main thread, an asyncio task) it checks the current deadline only.
    """
    slot = _current_slot.get()
    if slot is not None and slot.cancel is not None:
        exc = slot.acked = slot.cancel.exception()
        raise exc
    d = current_deadline()
    if d is not None and not math.isinf(d.expires_at) and now() >= d.expires_at:
        bound = d.binding()
        _spans.record_deadline_exceeded(bound.name, bound.budget)
        exc = DeadlineExceeded(deadline_name=bound.name, budget=bound.budget)
        if slot is not None:
            slot.acked = exc
        raise exc


def _acknowledged(slot: _Slot, outcome: object) -> bool:
    """Whether ``outcome`` is the call stopping because it was told to (at a checkpoint).

    Only the exception ``checkpoint()`` raised in it counts: a thread that raises its own
    ``DeadlineExceeded`` (a nested group's ``JoinTimeout``) after being cancelled failed,
    and its failure is reported like any other.
    """
    return slot.cancel is not None and outcome is not None and outcome is slot.acked


def _label(d: Deadline | None) -> str:
    name = d.name if d is not None else None
    return repr(name) if name else "(unnamed)"


# --- the shared pool ---------------------------------------------------------------------


class _DaemonPool(Executor):
    """A thread pool of daemon workers that grows past its size for abandoned threads.

    ``concurrent.futures.ThreadPoolExecutor`` joins its (non-daemon) workers at exit, so
    one thread stuck in a socket read would hang the interpreter's exit; and its stuck
    workers would starve everything queued behind them. Here each thread the pool is told
    it abandoned (:meth:`abandoned`) adds a worker until that thread's call returns.
    """

    def __init__(self, max_workers: int, prefix: str) -> None:
        self._max = max_workers
        self._prefix = prefix
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._stuck = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn, args, kwargs))
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # that worker takes this item
                return future
            if self._threads >= self._max + self._stuck:
                return future
            self._threads += 1
            n = self._threads
        threading.Thread(target=self._work, name=f"{self._prefix}-{n}", daemon=True).start()
        return future

    def abandoned(self, n: int = 1) -> None:
        """``n`` running calls were given up on: add workers while they are stuck."""
        with self._lock:
            self._stuck += n
            # The idle count can be stale (a worker counts itself idle before it takes
            # an item that was already queued): spawn for what is queued regardless.
            spawn = max(0, min(n, self._queue.qsize()))
            self._threads += spawn
            first = self._threads - spawn
        for i in range(spawn):
            name = f"{self._prefix}-{first + i + 1}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def released(self) -> None:
        """An abandoned call returned: its extra worker is no longer owed."""
        with self._lock:
            self._stuck -= 1

    def _work(self) -> None:
        while True:
            future, fn, args, kwargs = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            with self._lock:
                if self._threads > self._max + self._stuck:
                    self._threads -= 1
                    return  # a worker added for a stuck thread that has since returned
                self._idle += 1


_pool: _DaemonPool | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> _DaemonPool:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                size = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
                _pool = _DaemonPool(size, "hangguard")
            pool = _pool
    return pool


def _release_worker(executor: Executor | None) -> None:
    if isinstance(executor, _DaemonPool):
        executor.released()


# --- the thread group --------------------------------------------------------------------


class ThreadGroup(GroupBase):
    """Run blocking functions in threads and join them within a bounded time.

    The thread counterpart of :class:`~hangguard.TaskGroup`, with the same semantics as
    far as threads allow: ``join`` returns results in submit order; with
    ``return_exceptions=False`` the first failure is raised (after the rest were
    cancelled); on timeout (``timeout``, else ``HANGGUARD_JOIN_TIMEOUT``, capped by the
    current :func:`hangguard.deadline`) :class:`JoinTimeout` carries the partial results.
    A running thread cannot be stopped: it is abandoned (recorded with its stack) and
    the join returns on time; :func:`checkpoint` raises in it from then on::

        group = hangguard.ThreadGroup("fetch", timeout=30)
        for url in urls:
            group.submit(fetch, url)
        pages = group.join(return_exceptions=True)

    or, joining at the end of the block::

        with hangguard.ThreadGroup("fetch") as group:
            group.submit(fetch, "http://127.0.0.1:8000/")

    ``submit(fn, *args, **kwargs)`` passes every keyword to ``fn``; ``submit_named``
    gives the task a name. ``executor`` is the pool to run in (by default a shared pool
    of daemon threads); ``limit`` bounds how many run at once; ``HANGGUARD_SERIAL=1``
    runs them one at a time in submit order and logs each start and outcome.
    """

    _kind = "thread group"

    def __init__(
        self,
        name: str = "group",
        *,
        timeout: float | None = None,
        return_exceptions: bool | None = None,
        limit: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, return_exceptions=return_exceptions, limit=limit)
        self._executor = executor
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._slots: list[_Slot] = []
        self._names: dict[int, str] = {}
        self._queued: collections.deque[_Slot] = collections.deque()
        self._running = 0  # handed to the executor and not finished (for the limit)
        self._pending = 0
        self._failures: list[_Slot] = []
        self._abandoned = 0
        self._wake_any = False
        self._checked_fn: object = _NOTHING
        self._named_fn: object = _NOTHING
        self._fn_label = ""
        self._cancelled_at: float | None = None  # monotonic time of the first cancel

    # -- submitting -------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` in a thread of this group; ``join`` gives its result.

        ``fn`` is a plain (blocking) function; for ``async def`` use a
        :class:`~hangguard.TaskGroup`. Every keyword goes to ``fn``.
        """
        self._submit(None, fn, args, kwargs)

    def submit_named(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Like :meth:`submit`, naming the task ``name`` in logs, spans and errors."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self._submit(name, fn, args, kwargs)

    def _submit(self, name: str | None, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        if self._state is not OPEN:
            raise self._already_joined()
        if fn is not self._checked_fn:
            if not callable(fn):
                raise TypeError(f"submit() takes a function, got {fn!r} (group {self.name!r})")
            if is_coroutine_function(fn):
                raise TypeError(
                    f"submit() runs blocking functions in threads; {fn_name(fn)!r} is a "
                    f"coroutine function: use hangguard.TaskGroup (group {self.name!r})"
                )
            self._checked_fn = fn
        slot = _Slot(len(self._slots), fn, args, kwargs)
        if name is not None:
            self._names[slot.index] = name
        self._start_group()
        with self._lock:
            self._slots.append(slot)
            self._pending += 1
            if self._settings.limit is not None and self._running >= self._settings.limit:
                slot.context = contextvars.copy_context()
                self._queued.append(slot)
                return
            self._running += 1
            # Marked under the lock, as a held call handed on is: a sibling's fail-fast
            # cancel between here and the pool waits for it instead of counting it
            # cancelled before it started (and counting it again when it runs).
            slot.state = _SUBMITTED
        self._dispatch(slot, direct=True)

    def _dispatch(self, slot: _Slot, *, direct: bool) -> None:
        slot.held = not direct  # either way, marked _SUBMITTED under the lock
        slot.submitted_at = time.monotonic()
        executor = self._executor if self._executor is not None else _shared_pool()
        context, slot.context = slot.context or contextvars.copy_context(), None
        try:
            slot.future = executor.submit(context.run, self._run, slot)
        except BaseException as exc:
            if slot.state == _DONE:
                if slot.outcome is exc:
                    return  # the executor ran it inline and it raised: recorded in its slot
                raise  # the executor's own failure after running the call inline
            # The executor refused it (shut down, say): the slot holds the error, and a
            # direct submit raises it to its caller, as the executor's submit would.
            with self._lock:
                if slot.state != _ABANDONED:  # a held call the join gave up on stays so
                    slot.state = _RUNNING
            self._finish_slot(slot, exc, failed=True, quiet=direct)
            if direct:
                raise

    def task_name(self, index: int) -> str:
        """The name of the task submitted at ``index`` (explicit, else ``fn[index]``)."""
        name = self._names.get(index)
        if name is not None:
            return name
        fn = self._slots[index].fn
        if fn is not self._named_fn:
            self._named_fn, self._fn_label = fn, fn_name(fn)
        return f"{self._fn_label}[{index}]"

    def __len__(self) -> int:
        return len(self._slots)

    def futures(self) -> list[tuple[int, Future[Any]]]:
        """The executor's future of each call handed to it, with its index."""
        return [(s.index, s.future) for s in self._slots if s.future is not None]

    def _task_span(self, slot: _Slot) -> Span:
        assert self._tracer is not None
        return _spans.start_task_span(self._tracer, self.task_name(slot.index), self._span_ctx)

    # -- in the worker thread ---------------------------------------------------------

    def _run(self, slot: _Slot) -> Any:
        """Run one call in the worker thread, inside the context copied at submit."""
        # The state stays _SUBMITTED while it runs: only the joiner (abandoning it) and
        # _finish_slot change it, under the lock, so neither overwrites the other.
        slot.thread_id = threading.get_ident()
        _current_slot.set(slot)  # this context is the call's own copy
        d = current_deadline()
        if d is not None and not math.isinf(d.expires_at) and now() >= d.expires_at:
            # It waited (for the group's limit, or for a worker) until its deadline passed:
            # it must not start late. Held back by the limit, it was cancelled before it
            # started, which is no failure of the pool: recorded, not logged as an error.
            if slot.held:
                exc = self._held_back(slot, d)
                self._finish_slot(slot, exc, failed=True, quiet=True)
                raise exc
            exc = self._no_free_worker(slot, d)
            self._finish_slot(slot, exc, failed=True)
            raise exc
        span: Span | None = None
        token: object = None
        tracer = self._tracer
        if tracer is not None:
            # _task_span, inlined: this runs once per call of every traced group.
            name = self.task_name(slot.index)
            span = slot.span = _spans.start_task_span(tracer, name, self._span_ctx)
            token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if slot.cancel is not None:
                # Cancelled while it was on its way to the pool (a held call being handed
                # on, or a direct submit racing a sibling's failure): it stops before its
                # function runs, as it would at its first checkpoint. Once the function
                # runs, cancelling it is asking, at checkpoints.
                stop = slot.acked = slot.cancel.exception()
                raise stop
            result = (
                self._run_logged(slot)
                if self._settings.serial
                else slot.fn(*slot.args, **slot.kwargs)
            )
        except BaseException as exc:
            if span is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
                if not _acknowledged(slot, exc):
                    _spans.record_failure(span, exc)
            self._finish_slot(slot, exc, failed=True)
            raise
        if span is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        self._finish_slot(slot, result, failed=False)
        return result

    def _run_logged(self, slot: _Slot) -> Any:
        name = self.task_name(slot.index)
        logger.info("serial: task %r started (group %r)", name, self.name)
        started = time.monotonic()
        try:
            result = slot.fn(*slot.args, **slot.kwargs)
        except BaseException as exc:
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

    def _held_back(self, slot: _Slot, d: Deadline) -> DeadlineExceeded:
        """A call the group's limit held back until its deadline passed: never started."""
        bound = d.binding()
        if self._tracer is not None:
            span = self._task_span(slot)
            CancelRecord(CANCEL_DEADLINE, bound.name or "").write(span)
            span.end()
        return DeadlineExceeded(
            f"task {self.task_name(slot.index)!r} was cancelled before it started: held back "
            f"by the group's {self._settings.held_text()} until deadline {_label(bound)} passed "
            f"({budget_text(bound.budget)})",
            deadline_name=bound.name,
            budget=bound.budget,
        )

    def _no_free_worker(self, slot: _Slot, d: Deadline) -> DeadlineExceeded:
        bound = d.binding()
        waited = time.monotonic() - slot.submitted_at
        _metrics.record_threads_no_free_worker()
        if self._tracer is not None:
            span = self._task_span(slot)
            CancelRecord(CANCEL_NO_FREE_WORKER, bound.name or "").write(span)
            span.end()
        return DeadlineExceeded(
            f"task {self.task_name(slot.index)!r} did not start before deadline {_label(bound)} "
            f"({budget_text(bound.budget)}): no free worker in its pool for {waited:.2f}s",
            deadline_name=bound.name,
            budget=bound.budget,
        )

    def _finish_slot(self, slot: _Slot, outcome: Any, *, failed: bool, quiet: bool = False) -> None:
        # What the joiner may look at (the span, the failure's log line) is done before
        # it is woken, so that a join that returned has nothing of its calls in flight.
        abandoned = False
        if slot.span is not None:
            with self._lock:
                abandoned = slot.state == _ABANDONED
                span, slot.span = slot.span, None
            if span is not None:
                span.end()
        logged = False
        if failed and not quiet and not abandoned and not _acknowledged(slot, outcome):
            logged = True
            logger.error(
                "task %r of thread group %r failed with %s",
                self.task_name(slot.index),
                self.name,
                type(outcome).__name__,
                exc_info=outcome,
            )
        nxt: _Slot | None = None
        refused: _Slot | None = None
        with self._lock:
            late = slot.state == _ABANDONED
            slot.state = _DONE
            if not late:
                slot.outcome = outcome
                slot.failed = failed
                self._pending -= 1
                if failed:
                    self._failures.append(slot)
                # The joiner waits for all, for a failure (fail-fast), or, in the grace,
                # for any: woken only then, not once per call.
                if self._pending == 0 or self._wake_any or (failed and self._fail_fast):
                    self._cond.notify_all()
                self._running -= 1
                while self._queued and not self._joined_giving_up():
                    nxt = self._queued.popleft()
                    if not self._refused_late(nxt):
                        self._running += 1
                        # No longer queued from here on: a join cancelling before the
                        # hand-on reaches the pool waits for it as for a running call
                        # (it stops before it starts) instead of counting it cancelled.
                        nxt.state = _SUBMITTED
                        break
                    refused, nxt = nxt, None
        if late:
            self._log_late(slot, outcome, failed and not logged)
        elif failed and self._fail_fast and self._failures[0] is slot:
            self._cancel_rest(CANCEL_SIBLING_FAILED, self.task_name(slot.index))
        elif refused is not None and self._fail_fast and self._failures[0] is refused:
            self._cancel_rest(CANCEL_SIBLING_FAILED, self.task_name(refused.index))
        if nxt is not None:
            self._dispatch(nxt, direct=False)

    def _refused_late(self, slot: _Slot) -> bool:
        """Under the lock: a held call whose deadline passed while it waited never starts.

        It is ended here, as held back, and not handed to the pool: handed on, the join
        could find it running (and abandon it) before its thread saw the deadline.
        """
        context = slot.context
        d = context.run(current_deadline) if context is not None else None
        if d is None or math.isinf(d.expires_at) or now() < d.expires_at:
            return False
        slot.context = None
        slot.held = True
        slot.outcome = self._held_back(slot, d)
        slot.failed = True
        slot.state = _DONE
        self._pending -= 1
        self._failures.append(slot)
        if self._pending == 0 or self._wake_any or self._fail_fast:
            self._cond.notify_all()
        return True

    def _joined_giving_up(self) -> bool:
        return self._state is DONE or (self._fail_fast and bool(self._failures))

    def _log_late(self, slot: _Slot, outcome: Any, failed: bool) -> None:
        """An abandoned thread's call returned at last: say how it ended, once."""
        _release_worker(self._executor if self._executor is not None else _pool)
        _forget_abandoned(slot)
        name = self.task_name(slot.index)
        if failed and not _acknowledged(slot, outcome):
            logger.error(
                "abandoned task %r of thread group %r failed later with %s",
                name,
                self.name,
                type(outcome).__name__,
                exc_info=outcome,
            )
        else:
            logger.info("abandoned task %r of thread group %r has ended", name, self.name)

    # -- cancelling and abandoning ----------------------------------------------------

    def _cancel_rest(self, reason: str, cause: str, d: Deadline | None = None) -> list[_Slot]:
        """Cancel what has not started; mark the running ones so checkpoint() raises.

        Returns the slots still running (for the caller to wait on or abandon).
        """
        cancel = _Cancel(
            reason,
            cause,
            deadline_name=d.name if d is not None else cause,
            budget=d.budget if d is not None else 0.0,
        )
        running: list[_Slot] = []
        never_started: list[_Slot] = []
        newly = 0  # told now, not by an earlier cancel
        if self._cancelled_at is None:
            self._cancelled_at = time.monotonic()
        with self._lock:
            self._queued.clear()
            for slot in self._slots:
                if slot.state in (_DONE, _CANCELLED, _ABANDONED):
                    continue
                if slot.cancel is None:
                    slot.cancel = cancel
                    newly += 1
                if slot.state == _QUEUED or (slot.future is not None and slot.future.cancel()):
                    slot.state = _CANCELLED
                    self._pending -= 1
                    never_started.append(slot)
                else:
                    running.append(slot)
            if self._pending == 0:
                self._cond.notify_all()
        if newly and reason == CANCEL_SIBLING_FAILED and self._failures:
            # The first failure's cancel tells every call left; a later one finds none new.
            log_fail_fast(self.name, cause, self._failures[0].outcome, newly, kind="thread group")
        if self._tracer is not None:
            record = CancelRecord(reason, cause)
            for slot in never_started[:STACK_CAPTURES]:
                span = self._task_span(slot)
                record.write(span)
                span.end()
        return running

    def _abandon(self, running: list[_Slot], reason: str, cause: str) -> list[_Slot]:
        """Give up on threads that are still running: record where each one is stuck."""
        stuck: list[_Slot] = []
        with self._lock:
            for slot in running:
                if slot.state == _RUNNING or slot.state == _SUBMITTED:
                    slot.state = _ABANDONED
                    self._pending -= 1
                    stuck.append(slot)
        if not stuck:
            return stuck
        self._abandoned += len(stuck)
        _list_abandoned(stuck, [self.task_name(s.index) for s in stuck])
        stacks = thread_stacks(s.thread_id for s in stuck[:STACK_CAPTURES])
        # Which thread each is stuck in (named on its record, not on every task span).
        names = {t.ident: t.name for t in threading.enumerate()}
        _metrics.record_threads_abandoned(len(stuck))
        pool = self._executor if self._executor is not None else _pool
        if isinstance(pool, _DaemonPool):
            pool.abandoned(len(stuck))
        record = CancelRecord(reason, cause)
        for i, slot in enumerate(stuck):
            attrs: dict[str, str | int] = {}
            stack = stacks.get(slot.thread_id) if (i < STACK_CAPTURES and slot.thread_id) else None
            if stack:
                attrs[ATTR_TASK_STACK] = stack
            if slot.thread_id is not None:
                attrs[ATTR_THREAD_ID] = slot.thread_id
                attrs[ATTR_THREAD_NAME] = names.get(slot.thread_id, "")
            with self._lock:
                span, slot.span = slot.span, None
            if (
                span is None
                and slot.thread_id is None  # never started: it has no span of its own yet
                and self._tracer is not None
                and i < STACK_CAPTURES
            ):
                span = self._task_span(slot)
            if span is not None:
                record.write(span, extra=lambda attrs=attrs: attrs)  # type: ignore[misc]
                span.end()  # the trace is complete now; the thread may never return
        shown = []
        for slot in stuck[:_LOGGED_STACKS]:
            stack = stacks.get(slot.thread_id) if slot.thread_id is not None else None
            where = stack.replace("\n", "\n      ") if stack else "(not started yet)"
            shown.append(f"  {self.task_name(slot.index)}:\n      {where}")
        more = (
            f"\n  ... and {len(stuck) - _LOGGED_STACKS} more" if len(stuck) > _LOGGED_STACKS else ""
        )
        logger.warning(
            "thread group %r: %d thread(s) still running were abandoned (%s: %s); "
            "a thread cannot be killed, it runs on until its call returns:\n%s%s",
            self.name,
            len(stuck),
            reason,
            cause,
            "\n".join(shown),
            more,
        )
        return stuck

    # -- joining ----------------------------------------------------------------------

    def join(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> list[Any]:
        """Wait for every call; return their results in submit order.

        ``timeout`` (seconds) defaults to the group's, then ``HANGGUARD_JOIN_TIMEOUT``; the
        current deadline caps it. On timeout :class:`JoinTimeout` carries the partial
        results, and threads still running are abandoned (see the class docstring).
        """
        mine = _current_slot.get()
        if mine is not None and any(s is mine for s in self._slots):
            raise RuntimeError(
                f"thread group {self.name!r} cannot be joined from one of its own threads "
                "(it would wait for itself)"
            )
        start = self._begin_join(timeout, return_exceptions)
        own, grace, left, by_deadline = start.own, start.grace, start.left, start.by_deadline
        if start.fail_fast_now and self._failures:
            first = self._failures[0]
            self._cancel_rest(CANCEL_SIBLING_FAILED, self.task_name(first.index))
        limit = start.limit
        end = time.monotonic() + limit
        try:
            with self._cond:
                while self._pending > 0 and not (self._fail_fast and self._failures):
                    wait = None if math.isinf(limit) else end - time.monotonic()
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                timed_out = self._pending > 0 and not (self._fail_fast and self._failures)
        except BaseException as exc:  # KeyboardInterrupt in the joining thread
            running = self._cancel_rest(CANCEL_PARENT, f"{self.name} join interrupted")
            self._abandon(running, CANCEL_PARENT, f"join interrupted by {type(exc).__name__}")
            self._finish(timed_out=False)
            raise

        if timed_out:
            cut = timeout_cut(self.name, own, left, by_deadline)
            waiting = [s for s in self._slots if s.state == _SUBMITTED]
            held = [s for s in self._slots if s.state == _QUEUED]
            running = self._cancel_rest(cut.reason, cut.cause, cut.bound)
            stuck = self._abandon(running, cut.reason, cut.cause)
            no_worker = [s for s in waiting if s.state == _CANCELLED]
            if no_worker:
                _metrics.record_threads_no_free_worker(len(no_worker))
            raise self._join_timeout(cut.deadline_name, cut.budget, stuck, no_worker, held)

        if self._fail_fast and self._failures:
            first = self._failures[0]
            running = self._cancel_rest(CANCEL_SIBLING_FAILED, self.task_name(first.index))
            if running:
                # Threads that call checkpoint() stop within the grace; the join stays
                # within its own limit even so.
                wait_until = min(time.monotonic() + grace, end)
                self._wake_any = True
                with self._cond:
                    while any(s.state in (_SUBMITTED, _RUNNING) for s in running):
                        wait = wait_until - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                self._abandon(running, CANCEL_SIBLING_FAILED, self.task_name(first.index))
            self._finish(timed_out=False)
            error = first.outcome
            assert isinstance(error, BaseException)
            raise error

        self._finish(timed_out=False)
        return [self._outcome_of(s) for s in self._slots]

    def _outcome_of(self, slot: _Slot) -> Any:
        """A slot's place in the results: its outcome, or why it never ran."""
        if slot.state == _CANCELLED and slot.cancel is not None:
            return slot.cancel.exception()
        return slot.outcome

    def _join_timeout(
        self,
        deadline_name: str | None,
        budget: float,
        stuck: list[_Slot],
        no_worker: list[_Slot],
        held: list[_Slot],
    ) -> JoinTimeout:
        abandoned = {id(s) for s in stuck}
        queued = {id(s) for s in held}
        waiting = {id(s) for s in no_worker}
        pending: list[str] = []
        results: list[Any] = []
        for slot in self._slots:
            if slot.state == _DONE and slot.outcome is not _NOTHING:
                results.append(slot.outcome)
                continue
            name = self.task_name(slot.index)
            pending.append(name)
            if id(slot) in abandoned:
                why = "is still running (abandoned)"
            elif id(slot) in waiting:
                why = "did not start: no free worker in its pool"
            elif id(slot) in queued:
                why = f"was cancelled before it started (held back by {self._settings.held_text()})"
            else:
                why = "was cancelled before it started"
            results.append(not_finished(f"task {name!r} {why} at", deadline_name, budget))
        self._finish(timed_out=True)
        extra = []
        if stuck:
            extra.append(f"{len(stuck)} abandoned still running")
        if no_worker:
            extra.append(f"{len(no_worker)} waited for a worker: no free worker in the pool")
        detail = f" ({'; '.join(extra)})" if extra else ""
        return join_timeout(
            self.name,
            total=len(self._slots),
            results=results,
            pending=pending,
            deadline_name=deadline_name,
            budget=budget,
            kind=self._kind,
            detail=detail,
        )

    def _finish(self, *, timed_out: bool) -> None:
        """Count the outcomes and end the group span (once)."""
        if not self._mark_done():
            return
        self._unregister()
        counts: collections.Counter[str] = collections.Counter()
        for s in self._slots:
            if s.state == _DONE:
                counts[_semconv.OUTCOME_FAILED if s.failed else _semconv.OUTCOME_OK] += 1
            elif s.state in (_CANCELLED, _ABANDONED):
                counts[_semconv.OUTCOME_TIMEOUT if timed_out else _semconv.OUTCOME_CANCELLED] += 1
        record_outcomes(counts)
        span, self._span = self._span, None
        if span is None:
            return
        first = self._failures[0].outcome if self._failures and self._fail_fast else None
        end_group_span(
            span,
            size=len(self._slots),
            failed=len(self._failures),
            cancelled=sum(1 for s in self._slots if s.state == _CANCELLED),
            timed_out=timed_out,
            first_failure=first if isinstance(first, BaseException) else None,
            abandoned=self._abandoned or None,
        )

    # -- with -------------------------------------------------------------------------

    def __enter__(self) -> ThreadGroup:
        self._enter_block()
        return self

    # -- the in-flight registry ---------------------------------------------------------

    def _children(self) -> list[_inflight.Entry]:
        """One entry per unfinished call, with its state (called by readers, any thread)."""
        entry = self._entry
        deadline = entry.deadline if entry is not None else math.inf
        cancelled_at = self._cancelled_at
        grace_over = cancelled_at is not None and time.monotonic() >= cancelled_at + self._grace
        out: list[_inflight.Entry] = []
        for slot in list(self._slots):
            state = slot.state
            if state in (_DONE, _CANCELLED):
                continue
            shown = child_state(
                abandoned=state == _ABANDONED,
                cancelled=slot.cancel is not None,
                grace_over=grace_over,
            )
            out.append(_slot_entry(slot, self.task_name(slot.index), deadline, entry, shown))
        return out

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None:
            self.join()
            return
        # The body failed: nothing more should run, and the join must not hide its error.
        self._state = SHUTTING_DOWN
        running = self._cancel_rest(CANCEL_PARENT, f"{self.name} body raised {type(exc).__name__}")
        self._abandon(running, CANCEL_PARENT, f"{self.name} body raised {type(exc).__name__}")
        self._finish(timed_out=False)


def _slot_entry(
    slot: _Slot, name: str, deadline: float, parent: _inflight.Entry | None, state: str
) -> _inflight.Entry:
    ident = slot.thread_id
    kid = _inflight.Entry(
        _inflight.THREAD,
        name,
        deadline=deadline,
        parent=parent,
        where=(lambda: _inflight.thread_frames(ident)) if ident is not None else None,
    )
    kid.state = state
    if ident is not None:
        kid.thread_id = ident
    return kid


# Every thread group's abandoned calls still running, by slot (with their names): a group
# is done when its join ends, but what it left running stays listed until it really ends.
_abandoned_slots: dict[_Slot, str] = {}
_abandoned_entry: _inflight.Entry | None = None
_abandoned_lock = threading.Lock()


def _list_abandoned(slots: list[_Slot], names: list[str]) -> None:
    global _abandoned_entry
    with _abandoned_lock:
        for slot, name in zip(slots, names, strict=True):
            _abandoned_slots[slot] = name
        if _abandoned_entry is None:
            _abandoned_entry = _inflight.add(
                _inflight.Entry(_inflight.GROUP, "abandoned threads", children=_abandoned_children)
            )


def _forget_abandoned(slot: _Slot) -> None:
    global _abandoned_entry
    with _abandoned_lock:
        _abandoned_slots.pop(slot, None)
        if not _abandoned_slots and _abandoned_entry is not None:
            _inflight.discard(_abandoned_entry)
            _abandoned_entry = None


def _abandoned_children() -> list[_inflight.Entry]:
    with _abandoned_lock:
        items = list(_abandoned_slots.items())
        parent = _abandoned_entry
    return [_slot_entry(s, n, math.inf, parent, _inflight.ABANDONED) for s, n in items]


# --- to_thread -----------------------------------------------------------------------------


def _run_alone(slot: _Slot) -> Any:
    slot.thread_id = threading.get_ident()  # its state is changed under _alone_lock only
    _current_slot.set(slot)
    d = current_deadline()
    if d is not None and not math.isinf(d.expires_at) and now() >= d.expires_at:
        # It waited for a worker past its deadline (nobody awaits it any more): not late.
        bound = d.binding()
        _metrics.record_threads_no_free_worker()
        exc = DeadlineExceeded(
            f"to_thread({fn_name(slot.fn)}) did not start before deadline {_label(bound)} "
            f"({budget_text(bound.budget)}): no free worker in the pool for "
            f"{time.monotonic() - slot.submitted_at:.2f}s",
            deadline_name=bound.name,
            budget=bound.budget,
        )
        _ended_alone(slot, exc, failed=True)
        raise exc
    try:
        result = slot.fn(*slot.args, **slot.kwargs)
    except BaseException as exc:
        _ended_alone(slot, exc, failed=True)
        raise
    _ended_alone(slot, result, failed=False)
    return result


_alone_lock = threading.Lock()


def _ended_alone(slot: _Slot, outcome: Any, *, failed: bool) -> None:
    with _alone_lock:
        late = slot.state == _ABANDONED
        slot.state = _DONE
    if not late:
        return
    _release_worker(_pool)
    name = fn_name(slot.fn)
    if failed and not _acknowledged(slot, outcome):
        logger.error(
            "abandoned to_thread(%s) failed later with %s",
            name,
            type(outcome).__name__,
            exc_info=outcome,
        )
    else:
        logger.info("abandoned to_thread(%s) has ended", name)


def _own_deadline_fired(task: asyncio.Task[Any] | None, cancelling: int) -> Deadline | None:
    """The deadline, when the cancellation just received is this task's own deadline."""
    dl = current_deadline()
    if dl is None or task is None or dl.enforced_in is not task:
        return None
    if task.cancelling() != cancelling + 1 or remaining() > 0:
        return None  # cancelled by someone else (too): not ours to turn into an error
    return dl.binding()


async def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking ``fn(*args, **kwargs)`` in a thread, bounded by the deadline.

    Like ``asyncio.to_thread``, and the context (deadline, OpenTelemetry span) travels
    into the thread. When the deadline passes (or the awaiting task is cancelled) the
    await ends on time: a call that has not started is cancelled; a running thread is
    abandoned, recorded on the current span with its stack, and :func:`checkpoint`
    raises in it from then on. Raises :class:`DeadlineExceeded` saying which::

        async with hangguard.deadline(5, name="parse"):
            tree = await hangguard.to_thread(parse_big_file, path)
    """
    if is_coroutine_function(fn):
        raise TypeError(
            f"to_thread() runs blocking functions; {fn_name(fn)!r} is a coroutine function: "
            "await it directly"
        )
    loop = asyncio.get_running_loop()
    _watchdog.maybe_watch()
    slot = _Slot(0, fn, args, kwargs)
    slot.state = _SUBMITTED
    slot.submitted_at = time.monotonic()
    pool = _shared_pool()
    future = pool.submit(contextvars.copy_context().run, _run_alone, slot)
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        return await _awaitable(future, loop)
    except asyncio.CancelledError:
        fired = _own_deadline_fired(task, cancelling)
        reason = CANCEL_DEADLINE if fired is not None else CANCEL_PARENT
        cause = (fired.name or "") if fired is not None else "awaiting task cancelled"
        slot.cancel = _Cancel(
            reason,
            cause,
            deadline_name=fired.name if fired is not None else None,
            budget=fired.budget if fired is not None else 0.0,
        )
        with _alone_lock:
            started = slot.state != _SUBMITTED or not future.cancel()
            if started and slot.state != _DONE:
                slot.state = _ABANDONED
        message = _give_up_alone(slot, fn, reason, cause, started)
        if fired is not None and message:
            _spans.record_deadline_exceeded(fired.name, fired.budget)
            raise DeadlineExceeded(
                f"deadline {_label(fired)} exceeded ({budget_text(fired.budget)}): {message}",
                deadline_name=fired.name,
                budget=fired.budget,
            ) from None
        raise


def _awaitable(future: Future[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future that ends as ``future`` did, with the very exception it raised.

    ``asyncio.wrap_future`` re-creates a ``TimeoutError`` (and a ``CancelledError``) as a
    new object without its traceback; the caller should see the thread's own error.
    """
    waiter: asyncio.Future[T] = loop.create_future()

    def settle(done: Future[T]) -> None:
        if waiter.done():
            return  # the awaiting task was cancelled meanwhile
        if done.cancelled():
            waiter.cancel()
            return
        exc = done.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())

    def relay(done: Future[T]) -> None:
        try:
            loop.call_soon_threadsafe(settle, done)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    future.add_done_callback(relay)
    return waiter


def _give_up_alone(
    slot: _Slot, fn: Callable[..., Any], reason: str, cause: str, started: bool
) -> str:
    """Record a to_thread call given up on; returns what to say about it ('' if done)."""
    span = trace.get_current_span()
    name = fn_name(fn)
    # On the awaiting op's span: the event only (its own cancel sets the attributes).
    attrs: dict[str, str] = {ATTR_TASK_NAME: name}
    if not started:
        waited = time.monotonic() - slot.submitted_at
        record = CancelRecord(CANCEL_NO_FREE_WORKER if reason == CANCEL_DEADLINE else reason, cause)
        if span.is_recording():
            record.write(span, on_span=False, extra=lambda: attrs)
        if reason == CANCEL_DEADLINE:
            _metrics.record_threads_no_free_worker()
            return f"to_thread({name}) did not start: no free worker in the pool for {waited:.2f}s"
        return ""
    if slot.state != _ABANDONED:
        return ""  # it finished just as we gave up
    stack = thread_stacks([slot.thread_id]).get(slot.thread_id or 0, "")
    if stack:
        attrs[ATTR_TASK_STACK] = stack
    if span.is_recording():
        CancelRecord(reason, cause).write(span, on_span=False, extra=lambda: attrs)
    _metrics.record_threads_abandoned()
    _shared_pool().abandoned()
    where = stack.split("\n", 1)[0] if stack else "(unknown)"
    logger.warning(
        "to_thread(%s) abandoned (%s: %s): a thread cannot be killed, it runs on until its "
        "call returns; it is at:\n      %s",
        name,
        reason,
        cause,
        stack.replace("\n", "\n      ") if stack else "(unknown)",
    )
    return f"to_thread({name}) abandoned, still running at {where}"
