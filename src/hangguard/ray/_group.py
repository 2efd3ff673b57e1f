"""A guarded group of Ray tasks: :class:`hangguard.TaskGroup`'s guarantees across processes.

The driver side. Each submitted function runs in a Ray worker through
:func:`hangguard.ray._worker.run_task`, with the caller's remaining budget and trace
context. The join asks Ray which tasks have ended with one ``ray.wait`` over all the
running ones at a time, blocking at most :data:`POLL` (so a failure is seen within it),
never past its timeout plus the cancel grace; the results come in one ``ray.get``. On
timeout or on the first failure (strict mode) the unfinished tasks get ``ray.cancel`` (a
``KeyboardInterrupt`` in the body), and those still running after ``HANGGUARD_CANCEL_GRACE``
get ``ray.cancel(force=True)`` (their worker process is killed; :mod:`._force` confirms it,
off the join's path). The group drops its object refs when the join ends, so abandoned work
leaves nothing pinned in the object store.

A cancel is only ever sent to a task that ``ray.wait`` has just reported unfinished, and
only a bounded number of times: a ``ray.cancel`` that races the completion of its task can
crash Ray's driver (ray-project/ray#54260, #54798: "Tried to complete task that was not
pending").

Ray's own task retries are turned off for the tasks the group submits; the group retries
them itself (``max_retries`` / ``retry_exceptions``, with Ray's defaults and meaning), so a
retry is started only while the budget left exceeds what the failed attempt used.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from .. import _metrics, _semconv, _spans
from .._cancel_record import CancelRecord
from .._deadline import current_deadline, remaining
from .._exceptions import JoinTimeout
from .._group_core import (
    DONE,
    OPEN,
    SHUTTING_DOWN,
    GroupBase,
    JoinStart,
    end_group_span,
    grace_or_default,
    join_timeout,
    log_fail_fast,
    not_finished,
    record_outcomes,
    timeout_cut,
)
from .._semconv import (
    ATTR_CANCEL_FORCED,
    ATTR_CANCEL_GRACE_S,
    ATTR_RETRY_ATTEMPT,
    ATTR_RETRY_REMAINING_S,
    ATTR_TASK_NAME,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    CANCEL_SIBLING_FAILED,
    CANCEL_TIMEOUT,
    EVENT_CANCEL_IGNORED,
    EVENT_RAY_RETRY_SKIPPED,
    EVENT_RETRY,
    SPAN_TASK,
)
from .._task_info import fn_name
from . import _driver_inflight, _force
from ._compat import is_remote_function, unwrap_remote_function
from ._errors import ObjectLost, TaskCancelled, WorkerLost, translate
from ._wire import make_meta
from ._worker import make_shim

__all__ = ["RemoteGroup", "TaskOptions"]

logger = logging.getLogger("hangguard")

#: Ray's default for ``max_retries`` of a task (system failures only).
RAY_DEFAULT_MAX_RETRIES: Final = 3
#: The longest one ``ray.wait`` of the join blocks: a failure ends a strict join within it
#: (well inside the 50 ms promised, with the ``ray.get`` and the cancels after it).
POLL: Final = 0.02
#: When, in seconds after the cancel, a cancel not yet acknowledged is sent again (once
#: each, within the first half of the grace): each cancel is a race with the task's end.
_RECANCEL_AT: Final = (0.1, 0.4)
# Options the group handles itself instead of passing them to Ray.
_OWN_OPTIONS: Final = frozenset({"max_retries", "retry_exceptions"})

# One remote function per submitted function (Ray exports it once, then only the
# arguments travel per call). Bounded: callables made per call (partials, closures)
# must not pile up.
_REMOTES_MAX: Final = 256
_remotes: collections.OrderedDict[Any, tuple[Any, dict[str, Any]]] = collections.OrderedDict()
_remotes_lock = threading.Lock()


def _check_options(options: Mapping[str, Any], where: str) -> None:
    returns = options.get("num_returns", 1)
    if returns != 1:
        raise ValueError(
            f"{where}: num_returns={returns!r} is not supported by RemoteGroup (one result "
            "per task); return a tuple instead"
        )


def _remote_for(fn: Any) -> tuple[Any, dict[str, Any]]:
    """The Ray remote function that runs ``fn`` guarded, and ``fn``'s own retry options."""
    try:
        with _remotes_lock:
            cached = _remotes.get(fn)
            if cached is not None:
                _remotes.move_to_end(fn)
                return cached
    except TypeError:
        pass  # unhashable: built each time, like ray.remote(fn) would be
    import ray

    if is_remote_function(fn):
        inner, options = unwrap_remote_function(fn)
    elif callable(fn) and not isinstance(fn, type):
        inner, options = fn, {}
    else:
        raise TypeError(
            f"submit() takes a function or a @ray.remote function, got {fn!r} "
            "(actors are not supported: submit a function that calls the actor)"
        )
    _check_options(options, fn_name(inner))
    own = {k: options.pop(k) for k in list(options) if k in _OWN_OPTIONS}
    # The group does the retrying, within the budget: Ray must not retry behind its back.
    remote = ray.remote(**{**options, "max_retries": 0, "retry_exceptions": False})(
        make_shim(inner)
    )
    entry = (remote, own)
    try:
        with _remotes_lock:
            _remotes[fn] = entry
            while len(_remotes) > _REMOTES_MAX:
                _remotes.popitem(last=False)
    except TypeError:
        pass
    return entry


def _retry_options(own: Mapping[str, Any], where: str) -> tuple[int, bool | tuple[type, ...]]:
    attempts = own.get("max_retries", RAY_DEFAULT_MAX_RETRIES)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < -1:
        raise ValueError(f"{where}: max_retries must be an int >= -1, got {attempts!r}")
    on = own.get("retry_exceptions", False)
    if isinstance(on, (list, tuple)):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in on):
            raise TypeError(f"{where}: retry_exceptions must be a bool or exception types")
        return attempts, tuple(on)
    if not isinstance(on, bool):
        raise TypeError(f"{where}: retry_exceptions must be a bool or exception types")
    return attempts, on


class _Slot:
    """One submitted task: what to run, its current attempt, and how it ended."""

    __slots__ = (
        "args",
        "attempt",
        "cancel",
        "done",
        "failed",
        "fn",
        "index",
        "kwargs",
        "max_retries",
        "name",
        "options",
        "outcome",
        "ref",
        "remote",
        "retry_on",
        "span",
        "started",
    )

    def __init__(
        self,
        index: int,
        name: str,
        remote: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        max_retries: int,
        retry_on: bool | tuple[type, ...],
    ) -> None:
        self.index = index
        self.name = name
        self.remote = remote
        self.args: tuple[Any, ...] | None = args
        self.kwargs: dict[str, Any] | None = kwargs
        self.options = options
        self.max_retries = max_retries
        self.retry_on = retry_on
        self.attempt = 0  # 0: not started yet
        self.ref: Any = None
        self.started = 0.0
        self.done = False
        self.failed = False
        self.outcome: Any = None
        self.cancel: tuple[str, str] | None = None  # (reason, cause) when the group cancelled
        self.span: Span | None = None


class TaskOptions:
    """``group.options(...)``: submit with Ray task options (and a task name).

    ``name`` names the task in logs, spans, :class:`~hangguard.JoinTimeout` and Ray; the
    other keywords are Ray's task options (``num_cpus``, ``resources``,
    ``scheduling_strategy``, ``max_retries``, ``retry_exceptions``, ...)::

        group.options(name="embed 7", num_cpus=2).submit(embed, chunk)
    """

    __slots__ = ("_group", "_name", "_options")

    def __init__(self, group: RemoteGroup, name: str | None, options: dict[str, Any]) -> None:
        self._group = group
        self._name = name
        self._options = options

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`RemoteGroup.submit`, with these options."""
        return self._group._submit(fn, args, kwargs, self._name, self._options)


class RemoteGroup(GroupBase):
    """Run functions as Ray tasks and join them within a bounded time.

    The Ray counterpart of :class:`hangguard.TaskGroup`, with the same semantics: results
    in submit order; with ``return_exceptions=False`` the first failure is raised once the
    others are cancelled, with ``True`` exceptions stand in their tasks' places; on timeout
    (``timeout``, else ``HANGGUARD_JOIN_TIMEOUT``, capped by the enclosing
    :func:`hangguard.deadline`) the unfinished tasks are cancelled and
    :class:`~hangguard.JoinTimeout` carries the partial results. ``join`` is the blocking
    join, ``ajoin`` the awaitable one::

        group = RemoteGroup("embed", timeout=120)
        for chunk in chunks:
            group.submit(embed, chunk)          # a plain function or a @ray.remote one
        vectors = group.join(return_exceptions=True)

    Each task body runs in its worker under the caller's remaining budget and joins the
    caller's trace. A worker or node lost, a cancellation from elsewhere or a lost result
    come out as :class:`WorkerLost`, :class:`NodeLost`, :class:`TaskCancelled` and
    :class:`ObjectLost`. ``limit`` bounds how many tasks run at once;
    ``HANGGUARD_SERIAL=1`` runs them one at a time, logging each.
    """

    _kind = "remote group"

    def __init__(
        self,
        name: str = "ray",
        *,
        timeout: float | None = None,
        return_exceptions: bool | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, return_exceptions=return_exceptions, limit=limit)
        self._slots: list[_Slot] = []
        self._queued: collections.deque[_Slot] = collections.deque()
        self._retry: list[_Slot] = []
        self._running = 0
        self._pending = 0
        self._failures: list[_Slot] = []
        # The running attempts by their ref: what one ray.wait asks about.
        self._live: dict[Any, _Slot] = {}
        self._stopping = False  # cancelling: nothing new is started
        self._cutoff = math.inf  # the join's end on time.monotonic, once joining
        self._node = ""

    # -- submitting -------------------------------------------------------------------

    def options(self, *, name: str | None = None, **ray_options: Any) -> TaskOptions:
        """Submit the next task with Ray options and/or a name: ``.options(...).submit(fn)``."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        _check_options(ray_options, f"group {self.name!r}")
        return TaskOptions(self, name, ray_options)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a Ray task of this group.

        ``fn`` is a plain function (sync or ``async def``) or a ``@ray.remote`` function;
        every keyword goes to ``fn`` (name the task with :meth:`options`). Returns the
        task's ``ObjectRef``, or ``None`` while ``limit`` holds it back.
        """
        return self._submit(fn, args, kwargs, None, {})

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        options: dict[str, Any],
    ) -> Any:
        if self._state is not OPEN:
            raise self._already_joined()
        if self._queued:  # start what ``limit`` held back, now that others may be done
            self._collect(_ended(list(self._live), 0.0))
        remote, own = _remote_for(fn)
        merged = {**own, **{k: v for k, v in options.items() if k in _OWN_OPTIONS}}
        label = fn_name(getattr(getattr(fn, "remote", None), "__wrapped__", fn))
        max_retries, retry_on = _retry_options(merged, label)
        ray_options = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
        index = len(self._slots)
        task_name = name if name is not None else f"{label}[{index}]"
        if name is not None:
            ray_options["name"] = name
        slot = _Slot(index, task_name, remote, args, kwargs, ray_options, max_retries, retry_on)
        self._slots.append(slot)
        self._pending += 1
        self._start_group()
        if self._settings.limit is not None and self._running >= self._settings.limit:
            self._queued.append(slot)
            return None
        self._start(slot, self._budget())
        return slot.ref

    def __len__(self) -> int:
        return len(self._slots)

    def task_name(self, index: int) -> str:
        """The name of the task submitted at ``index`` (given, else ``fn[index]``)."""
        return self._slots[index].name

    def _budget(self) -> float:
        """What a task started now may use: the join's cut-off, else the known limits."""
        left = remaining()
        if self._state is not OPEN:
            return min(left, max(0.0, self._cutoff - time.monotonic()))
        return left if self._settings.timeout is None else min(left, self._settings.timeout)

    def _deadline_name(self, budget: float) -> str | None:
        current = current_deadline()
        if current is not None and remaining() <= budget:
            return current.binding().name
        return f"join {self.name}"

    def _start(self, slot: _Slot, budget: float) -> None:
        if not self._node:
            self._node = _driver_node()
        slot.attempt += 1
        slot.started = time.monotonic()
        carrier: dict[str, str] = {}
        if self._tracer is not None:
            if slot.span is None:
                slot.span = self._tracer.start_span(
                    SPAN_TASK.format(slot.name),
                    context=self._span_ctx,
                    attributes={ATTR_TASK_NAME: slot.name},
                )
            propagate.inject(carrier, context=trace.set_span_in_context(slot.span))
        meta = make_meta(
            slot.name, self.name, budget, self._deadline_name(budget), carrier, self._node
        )
        nodes = _driver_inflight.book()  # where the worker says the task runs, for ps
        if nodes is not None:
            meta[_driver_inflight.NODES_KEY] = nodes
        if self._settings.serial:
            logger.info("serial: remote task %r started (group %r)", slot.name, self.name)
        try:
            remote = slot.remote.options(**slot.options) if slot.options else slot.remote
            slot.ref = remote.remote(meta, *(slot.args or ()), **(slot.kwargs or {}))
        except BaseException as exc:
            # Submitting itself failed (bad options, Ray not reachable): the task's outcome.
            slot.ref = None
            self._finalize(slot, exc, failed=True)
            return
        self._running += 1
        self._live[slot.ref] = slot

    # -- completion (on the joining thread) ---------------------------------------------

    def _collect(self, ready: list[Any]) -> None:
        """Handle the refs ``ray.wait`` found ready; start retries and queued tasks."""
        import ray

        slots = [s for s in (self._live.pop(r, None) for r in ready) if s is not None]
        values: list[Any] | None = None
        if slots:
            try:  # the common case, every one a result: one call
                values = ray.get([s.ref for s in slots])
            except Exception:
                values = None  # at least one failed: each on its own, below
        for i, slot in enumerate(slots):
            self._running -= 1
            if values is not None:
                self._finalize(slot, values[i], failed=False)
                continue
            try:
                value = ray.get(slot.ref)
            except Exception as exc:
                # Its traceback here is only ray.get's own frames, which hold the task's
                # ref: kept with the error, it would pin the object (the remote traceback
                # is in the error's message).
                error = translate(exc.with_traceback(None), slot.name)
            else:
                self._finalize(slot, value, failed=False)
                continue
            if slot.cancel is None and self._should_retry(slot, error):
                self._retry.append(slot)
                continue
            self._finalize(slot, error, failed=True)
        # A failure's traceback keeps this frame: it must not keep the refs with it (the
        # caller holding the raised error would pin every result of this batch).
        ready.clear()
        slots.clear()
        self._pump()

    def _step(self, timeout: float) -> None:
        """Wait at most ``timeout`` (blocking) for running tasks to end, and handle those."""
        self._collect(_ended(list(self._live), timeout))

    async def _astep(self, timeout: float) -> None:
        """:meth:`_step`, its ``ray.wait`` in the loop's executor so the loop runs on."""
        refs = list(self._live)
        if not refs or timeout <= 0:
            self._collect(_ended(refs, 0.0))
            return
        loop = asyncio.get_running_loop()
        self._collect(await loop.run_in_executor(None, _ended, refs, timeout))

    def _should_retry(self, slot: _Slot, error: BaseException) -> bool:
        if isinstance(error, (TaskCancelled, ObjectLost)):
            return False
        if isinstance(error, WorkerLost):
            wanted = True
        elif isinstance(slot.retry_on, tuple):
            wanted = isinstance(error, slot.retry_on)
        else:
            wanted = slot.retry_on
        if not wanted or (slot.max_retries != -1 and slot.attempt > slot.max_retries):
            return False
        used = time.monotonic() - slot.started
        left = self._budget()
        if left <= used:
            # It took that long to get where it failed: a new attempt would not fit.
            logger.warning(
                "remote task %r of group %r not retried: %.3gs left, the failed attempt took %.3gs",
                slot.name,
                self.name,
                left,
                used,
            )
            if slot.span is not None:
                slot.span.add_event(
                    EVENT_RAY_RETRY_SKIPPED,
                    {ATTR_RETRY_ATTEMPT: slot.attempt, ATTR_RETRY_REMAINING_S: left},
                )
            return False
        logger.warning(
            "remote task %r of group %r failed with %s: retrying (attempt %d)",
            slot.name,
            self.name,
            type(error).__name__,
            slot.attempt + 1,
        )
        if slot.span is not None:
            slot.span.add_event(
                EVENT_RETRY,
                {
                    ATTR_RETRY_ATTEMPT: slot.attempt,
                    _semconv.ATTR_EXCEPTION_TYPE: _spans.error_type(error),
                    _semconv.ATTR_EXCEPTION_MESSAGE: str(error),
                },
            )
        _metrics.record_retry(self.name)
        return True

    def _pump(self) -> None:
        """Start the retries due and, within ``limit``, the queued tasks."""
        if self._stopping:
            return
        while self._retry:
            slot = self._retry.pop(0)
            self._start(slot, self._budget())
        while self._queued and (
            self._settings.limit is None or self._running < self._settings.limit
        ):
            if self._state is not OPEN and self._cutoff <= time.monotonic():
                return
            self._start(self._queued.popleft(), self._budget())

    def _finalize(self, slot: _Slot, outcome: Any, *, failed: bool, end_span: bool = True) -> None:
        slot.done = True
        slot.outcome = outcome
        slot.failed = failed and slot.cancel is None
        slot.ref = slot.args = slot.kwargs = None  # release the object refs
        self._pending -= 1
        if slot.failed:
            self._failures.append(slot)
            logger.error(
                "remote task %r of group %r failed with %s",
                slot.name,
                self.name,
                type(outcome).__name__,
                exc_info=outcome,
            )
        elif self._settings.serial:
            logger.info("serial: remote task %r ended (group %r)", slot.name, self.name)
        span = slot.span
        if span is not None and end_span:
            if slot.failed:
                _spans.record_failure(span, outcome)
            span.end()

    # -- cancelling --------------------------------------------------------------------

    def _cancel_all(self, reason: str, cause: str) -> int:
        """Ask every unfinished task to stop (``ray.cancel``); queued ones never start."""
        self._stopping = True
        # What has ended by now keeps its outcome, and gets no cancel: a cancel racing the
        # end of its task is what can crash Ray's driver (see the module's docstring).
        self._collect(_ended(list(self._live), 0.0))
        count = 0
        while self._queued:
            slot = self._queued.popleft()
            slot.cancel = (reason, cause)
            self._record_cancel(slot, reason, cause)
            self._finalize(slot, None, failed=False)
            count += 1
        for slot in self._retry:
            slot.cancel = (reason, cause)
            self._record_cancel(slot, reason, cause)
            self._finalize(slot, None, failed=False)
            count += 1
        self._retry.clear()
        for slot in self._live.values():
            if slot.cancel is not None:
                continue
            slot.cancel = (reason, cause)
            self._record_cancel(slot, reason, cause)
            count += 1
        self._send_cancels()
        return count

    def _send_cancels(self) -> None:
        """``ray.cancel`` each task still running, as ``ray.wait`` just reported them."""
        import ray

        for ref, slot in list(self._live.items()):
            try:
                ray.cancel(ref, force=False, recursive=True)
            except Exception:
                logger.warning("ray.cancel of remote task %r failed", slot.name, exc_info=True)

    def _grace_plan(self, grace: float) -> tuple[float, list[float]]:
        """The grace's end and when to ask again (a cancel that reaches a task while Ray
        hands it to a worker can be lost), all within its first half: no cancel may be in
        flight when the forced one is sent (Ray drops a cancel of a task it is still
        cancelling)."""
        now = time.monotonic()
        return now + grace, [now + at for at in _RECANCEL_AT if at <= grace / 2]

    def _wait_grace_sync(self, grace: float) -> None:
        end, again = self._grace_plan(grace)
        while self._live and (now := time.monotonic()) < end:
            until = min(end, again[0]) if again else end
            self._step(min(POLL * 2, max(0.0, until - now)))
            if again and time.monotonic() >= again[0]:
                again.pop(0)
                self._send_cancels()

    def _record_cancel(self, slot: _Slot, reason: str, cause: str) -> None:
        if slot.span is not None:
            CancelRecord(reason, cause).write(slot.span)

    def _force_stuck(self, grace: float) -> None:
        """Kill the workers of the tasks that ignored their cancellation for ``grace``."""
        import ray

        if not self._live:
            return
        self._collect(_ended(list(self._live), 0.0))  # no kill for what just ended
        stuck = list(self._live.items())
        if not stuck:
            return
        names = [s.name for _, s in stuck]
        logger.warning(
            "group %r: %d remote task(s) ignored cancellation for %gs; killing their workers: %s",
            self.name,
            len(stuck),
            grace,
            ", ".join(names),
        )
        if self._span is not None:
            self._span.add_event(
                EVENT_CANCEL_IGNORED,
                {ATTR_TASK_NAME: names, ATTR_CANCEL_GRACE_S: grace, ATTR_CANCEL_FORCED: True},
            )
        for ref, slot in stuck:
            del self._live[ref]
            try:
                ray.cancel(ref, force=True, recursive=True)
            except Exception:
                logger.warning("ray.cancel(force=True) of %r failed", slot.name, exc_info=True)
            # Confirmed (or reported) off the join's path; its span ends there.
            _force.watch(slot.name, self.name, ref, slot.span, slot.started)
            # Abandoned: its outcome is decided (cancelled); the group's refs go now.
            self._running -= 1
            self._finalize(slot, None, failed=False, end_span=False)
            slot.span = None

    # -- joining ----------------------------------------------------------------------

    def _begin(self, timeout: float | None, return_exceptions: bool | None) -> JoinStart:
        # No failure is seen before the join (nothing watches the refs until it runs), so
        # fail-fast acts from the join on, with the mode the core decided.
        start = self._begin_join(timeout, return_exceptions)
        self._cutoff = time.monotonic() + start.limit
        return start

    def _settled(self, fail_fast: bool) -> bool:
        return self._pending == 0 or (fail_fast and bool(self._failures))

    def join(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> list[Any]:
        """Wait for every task (blocking); return their results in submit order.

        ``timeout`` defaults to the group's, then ``HANGGUARD_JOIN_TIMEOUT``; the
        enclosing deadline caps it; the join returns or raises by then plus the cancel
        grace. Raises the first failure (``return_exceptions=False``, the default) or
        :class:`~hangguard.JoinTimeout` with the partial results.
        """
        start = self._begin(timeout, return_exceptions)
        own, grace, by_deadline = start.own, start.grace, start.by_deadline
        fail_fast = self._fail_fast
        try:
            while True:
                if self._settled(fail_fast) or (now := time.monotonic()) >= self._cutoff:
                    break
                self._step(min(POLL, self._cutoff - now))
            outcome = self._conclude(fail_fast, by_deadline)
            if outcome is not None:
                self._wait_grace_sync(grace)
                self._force_stuck(grace)
        except BaseException:
            self._abort()
            raise
        if outcome is None:
            return self._results()
        raise self._raise(outcome, own, by_deadline)

    async def ajoin(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> list[Any]:
        """:meth:`join` for ``async`` code: the same semantics, awaiting instead of blocking.

        If the awaiting task is cancelled, the remote tasks are cancelled too (forced after
        the grace) and the cancellation goes on.
        """
        start = self._begin(timeout, return_exceptions)
        own, grace, by_deadline = start.own, start.grace, start.by_deadline
        fail_fast = self._fail_fast
        try:
            while True:
                if self._settled(fail_fast) or (now := time.monotonic()) >= self._cutoff:
                    break
                await self._astep(min(POLL, self._cutoff - now))
            outcome = self._conclude(fail_fast, by_deadline)
            if outcome is not None:
                await self._wait_grace(grace)
                self._force_stuck(grace)
        except asyncio.CancelledError as exc:
            # An enclosing deadline that fired (here or in a parent), else the parent.
            record = CancelRecord.of_joiner(exc, self.name)
            self._cancel_all(record.reason, record.cause)
            try:
                await self._wait_grace(grace)
            finally:
                self._force_stuck(grace)
                self._finish(timed_out=False)
            raise
        except BaseException:
            self._abort()
            raise
        if outcome is None:
            return self._results()
        raise self._raise(outcome, own, by_deadline)

    async def _wait_grace(self, grace: float) -> None:
        end, again = self._grace_plan(grace)
        while self._live and (now := time.monotonic()) < end:
            until = min(end, again[0]) if again else end
            await self._astep(min(POLL * 2, max(0.0, until - now)))
            if again and time.monotonic() >= again[0]:
                again.pop(0)
                self._send_cancels()

    def _conclude(self, fail_fast: bool, by_deadline: bool) -> str | None:
        """After the wait: ``None`` when done, else why the rest is being cancelled."""
        if fail_fast and self._failures:
            first = self._failures[0]
            n = self._cancel_all(CANCEL_SIBLING_FAILED, first.name)
            if n:
                log_fail_fast(self.name, first.name, first.outcome, n, noun="remote task")
            return "failed"
        if self._pending == 0:
            self._finish(timed_out=False)
            return None
        cut = timeout_cut(self.name, math.inf, remaining(), by_deadline)
        self._cancel_all(cut.reason, cut.cause)
        return "timeout"

    def _raise(self, outcome: str, own: float, by_deadline: bool) -> BaseException:
        if outcome == "failed":
            self._finish(timed_out=False)
            error = self._failures[0].outcome
            assert isinstance(error, BaseException)
            return error
        cut = timeout_cut(self.name, own, own, by_deadline)
        return self._join_timeout(cut.deadline_name, cut.budget)

    def _abort(self, grace: float = 0.0) -> None:
        """The join or the ``with`` body failed: stop every task, waiting at most ``grace``."""
        if self._state is DONE:
            return
        self._state = SHUTTING_DOWN
        self._cancel_all(CANCEL_PARENT, self.name)
        self._wait_grace_sync(grace)
        self._force_stuck(grace)
        self._finish(timed_out=False)

    def _results(self) -> list[Any]:
        return [s.outcome for s in self._slots]

    def _join_timeout(self, deadline_name: str | None, budget: float) -> JoinTimeout:
        pending: list[str] = []
        results: list[Any] = []
        for slot in self._slots:
            if slot.cancel is not None and (slot.outcome is None or _was_cancelled(slot.outcome)):
                pending.append(slot.name)
                what = f"remote task {slot.name!r} did not finish before"
                results.append(not_finished(what, deadline_name, budget))
            else:
                results.append(slot.outcome)
        self._finish(timed_out=True)
        return join_timeout(
            self.name,
            total=len(self._slots),
            results=results,
            pending=pending,
            deadline_name=deadline_name,
            budget=budget,
            noun="remote task(s)",
        )

    # -- the driver's in-flight entry: the node book adds where each task runs --------

    def _register(self) -> None:
        self._entry = _driver_inflight.register(self)

    def _unregister(self) -> None:
        _driver_inflight.leave(self._entry)
        self._entry = None

    def _finish(self, *, timed_out: bool) -> None:
        """Count the outcomes, end every span, and let go of every object ref."""
        if not self._mark_done():
            return
        self._live.clear()
        self._unregister()
        counts: collections.Counter[str] = collections.Counter()
        for slot in self._slots:
            if slot.failed:
                counts[_semconv.OUTCOME_FAILED] += 1
            elif slot.cancel is not None and (slot.outcome is None or _was_cancelled(slot.outcome)):
                reason = slot.cancel[0]
                timeout = reason in (CANCEL_TIMEOUT, CANCEL_DEADLINE)
                counts[_semconv.OUTCOME_TIMEOUT if timeout else _semconv.OUTCOME_CANCELLED] += 1
            elif slot.done:
                counts[_semconv.OUTCOME_OK] += 1
            if not slot.done:
                slot.done = True
                slot.ref = slot.args = slot.kwargs = None
                if slot.span is not None:
                    slot.span.end()
        record_outcomes(counts)
        span = self._span
        if span is None:
            return
        self._span = None
        first = (
            self._failures[0].outcome if self._failures and not self._return_exceptions else None
        )
        end_group_span(
            span,
            size=len(self._slots),
            failed=len(self._failures),
            cancelled=sum(1 for s in self._slots if s.cancel is not None and not s.failed),
            timed_out=timed_out,
            first_failure=first if isinstance(first, BaseException) else None,
        )

    # -- with / async with ---------------------------------------------------------------

    def __enter__(self) -> RemoteGroup:
        self._enter_block()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.join()
            return
        self._abort(grace_or_default())

    async def __aenter__(self) -> RemoteGroup:
        self._enter_block()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.ajoin()
            return
        self._abort()  # no blocking wait in a running loop: cancel, then force at once


def _driver_node() -> str:
    """This process's Ray node id (``""`` outside a connected driver)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _ended(refs: list[Any], timeout: float) -> list[Any]:
    """Those of ``refs`` that are ready: one ``ray.wait`` over all, blocking at most
    ``timeout`` (returning as soon as all are). Safe on any thread."""
    if not refs:
        return []
    import ray

    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(0.0, timeout))
    return list(ready)


def _was_cancelled(outcome: object) -> bool:
    return isinstance(outcome, (TaskCancelled, WorkerLost))
