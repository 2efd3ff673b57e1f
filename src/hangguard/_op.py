"""Guarded ops: a span and a deadline around an op's run, its sub-tasks in a TaskGroup.

Existing op classes in the ``BaseAsyncOp`` pattern (``async_call()`` / ``async_execute()``,
``submit_async_task()`` / ``join_async_task()`` over a ``task_list``) are guarded with the
:func:`guarded_op` class decorator or the :class:`GuardedOpMixin`; both apply the same
change to the class:

* The entry point is ``async_call`` when the class has one, else ``async_execute``: the
  entry is what callers (and ``self.ops[0].copy().async_call(...)``) invoke, and wrapping
  only one method keeps one span per run. Calling ``async_execute`` directly on a class
  with an ``async_call`` is not guarded.
* That entry runs in a span named for the op and in a deadline of the same name, whose
  budget is the decorator's ``budget``, else the op's ``HANGGUARD_BUDGETS`` entry, else
  ``HANGGUARD_DEFAULT_BUDGET``, read at each call.
* ``submit_async_task`` submits to a :class:`~hangguard.TaskGroup` that belongs to this
  one run of the op (held in a contextvar, so concurrent runs of one instance never mix;
  outside a guarded run, to a group held on the instance). ``join_async_task`` joins it.
  When the class brings its own ``join_async_task``, the guarded join first lets the group
  finish (timeouts, cancellation, spans) and then hands the finished tasks to the
  original join, so an op that worked returns exactly what it returned before; a failure
  the join hands over is its receiver's to log, and only those nobody receives are logged
  here (see ``_log_unreceived``). A class
  without one gets the group's result: results in submit order, nothing dropped.

:func:`hangguard.traced` gives a plain ``async def`` the same span and deadline.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, overload

from opentelemetry import trace

from . import _config
from ._deadline import current_deadline, remaining
from ._exceptions import ConfigError, DeadlineExceeded
from ._group import TaskGroup
from ._op_scope import check_budget, check_name, run_in_scope
from ._op_spec import (
    FALLBACK_ATTR,
    ORIGINAL_ATTR,
    SPEC_ATTR,
    OpSpec,
    find_original,
    op_task_list,
    spec_of,
    submit_label,
)
from ._op_sync import _ENTRY_NAMES as SYNC_ENTRY_NAMES
from ._op_sync import guard_sync
from ._semconv import ATTR_CANCEL_SWALLOWED
from ._spans import contained as _contained
from ._spans import record_deadline_exceeded
from ._task_info import OP_ENTRY_NAMES, outcome_of
from ._validate import callable_name, is_number

__all__ = ["GuardedOpMixin", "guarded_op"]

logger = logging.getLogger("hangguard")

C = TypeVar("C", bound=type)

_SUBMIT: Final = "submit_async_task"
_JOIN: Final = "join_async_task"
_RAY_SUBMIT: Final = "submit_ray_task"
_ENTRY_NAMES: Final = OP_ENTRY_NAMES
# Entry names shared with the sync side (flowllm 0.2's ``BaseOp.execute``): an async entry
# only when ``async def`` (flowllm 0.3's ``BaseStep.execute``).
_ASYNC_ONLY_ENTRIES: Final = frozenset({"execute"})
_INSTANCE_RUN: Final = "_hangguard_run"

# Every task submitted through a guarded op, to tell them from tasks put on a
# ``task_list`` by hand (which the original join must still see), and to know the run
# each belongs to (a join from inside one of its own run's tasks is refused). The run is
# kept by id, not by reference: a value holding its key alive would never be dropped, and
# a live task keeps its run alive (its context holds it), so the id cannot be reused.
_guarded_tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()


def _log_unreceived(group: TaskGroup, received: BaseException | None = None) -> None:
    """Log, once each, the failures of a run's group that its join did not hand over.

    The rule that gives every failure one report: a failure the join returns (``return_
    exceptions=True``, to the class's own join or the op's code) or raises (the first, when
    failing fast) is the receiver's to report; every other one (a second failure while the
    first is raised, failures in a join that timed out or was cancelled, tasks of a run
    that never joined them) is logged here, with the group's message and its traceback,
    right after the join ended. A task failing after that is logged by the group itself.
    """
    for task in group._failures:
        exc = task.exception()
        if exc is not None and exc is not received:
            group._log_failure(task, exc)


@dataclass(slots=True, eq=False)
class _Run:
    """One run of a guarded op: its sub-tasks go to ``group``, created on first submit."""

    op: object
    name: str
    task: asyncio.Task[Any] | None
    parent: _Run | None
    group: TaskGroup | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


_current_run: ContextVar[_Run | None] = ContextVar("hangguard_op_run", default=None)

# Ops already warned about a join that nothing bounds (one WARNING per op name).
_warned_unbounded: set[str] = set()


def _warn_if_unbounded(name: str, timeout: float | None) -> None:
    """One WARNING per op whose join has no timeout, no env timeout and no deadline."""
    if name in _warned_unbounded or (timeout is not None and not math.isinf(timeout)):
        return
    try:
        if not math.isinf(_config.join_timeout()):
            return
    except (ConfigError, TypeError, ValueError):
        return  # the join itself reports a bad value
    if not math.isinf(remaining()):
        return
    _warned_unbounded.add(name)
    logger.warning(
        "op %r joins its tasks with nothing bounding the wait: no timeout, no %s and no "
        "deadline (its budget is 'none'); a hung task would hang it forever. Pass "
        "join_async_task(timeout=...) or give the op a budget (%s, %s)",
        name,
        _config.ENV_JOIN_TIMEOUT,
        _config.ENV_DEFAULT_BUDGET,
        _config.ENV_BUDGETS,
    )


# --- per-run groups ----------------------------------------------------------------------


def _run_of(op: object) -> _Run:
    """The run whose group ``op.submit_async_task`` feeds: the innermost run of ``op`` in
    this context, else (called outside a guarded run) one kept on the instance."""
    run = _current_run.get()
    while run is not None:
        if run.op is op:
            return run
        run = run.parent
    try:
        state = vars(op)
    except TypeError:
        raise TypeError(
            f"{type(op).__name__}.submit_async_task() called outside a guarded run, and the "
            "op has no __dict__ to keep its task group on"
        ) from None
    run = state.get(_INSTANCE_RUN)
    # ``run.op is op`` guards against a shallow copy of the op carrying its original's run.
    if not isinstance(run, _Run) or run.op is not op:
        run = state[_INSTANCE_RUN] = _Run(op, spec_of(op).op_name(op), None, None)
    return run


def _forget(op: object, tasks: list[asyncio.Task[Any]]) -> None:
    """Take ``tasks`` off the op's ``task_list`` (the original join's cleanup duty)."""
    task_list = op_task_list(op)
    if task_list is not None and tasks:
        ours = set(tasks)
        task_list[:] = [t for t in task_list if t not in ours]


def _guarded_submit(
    self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    run = _run_of(self)
    if run.group is None:
        run.group = TaskGroup(run.name)
        # A guarded run always ends its group (its join, else _close_leftover), which then
        # logs what was not handed over; a group kept on the instance may never be joined.
        run.group._joiner_logs = run.task is not None
        run.tasks = []
    label = f"{submit_label(fn)}[{len(run.tasks)}]"
    task = run.group.submit_named(label, fn, *args, **kwargs)
    run.tasks.append(task)
    _guarded_tasks[task] = id(run)
    task_list = op_task_list(self)
    if task_list is not None:
        task_list.append(task)  # the original join gathers the real tasks
    return task


# Installed as ``submit_async_task``; it never defers to the class's own submit, because
# the group makes the task.
setattr(_guarded_submit, ORIGINAL_ATTR, None)


def _original_params(original: Callable[..., Any] | None) -> tuple[set[str], bool, bool]:
    """Which keywords the original join takes, whether it takes ``**kwargs``, and its
    default ``return_exceptions`` (so an unchanged call keeps its meaning)."""
    if original is None:
        return set(), False, False
    params = inspect.signature(original).parameters
    names = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    default = params.get("return_exceptions")
    default_re = (
        bool(default.default)
        if default is not None and default.default is not inspect.Parameter.empty
        else False
    )
    return names, var_kw, default_re


def _make_join(
    original: Callable[..., Awaitable[Any]] | None,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    names, var_kw, default_re = _original_params(original)

    async def join_async_task(
        self: Any, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> Any:
        """Join the tasks submitted in this run (see :class:`GuardedOpMixin`)."""
        mode = default_re if return_exceptions is None else return_exceptions
        run = _run_of(self)
        current = asyncio.current_task()
        if current is not None and _guarded_tasks.get(current) == id(run):
            # It would take the group from under the join that owns it and wait for itself.
            raise RuntimeError(
                f"{type(self).__name__}.join_async_task() called from inside one of the op's "
                "own tasks; join in the op's run, after submitting"
            )
        group, tasks = run.group, run.tasks
        run.group, run.tasks = None, []  # the next submit starts a new group
        results: list[Any] = []
        if group is not None:
            _warn_if_unbounded(run.name, timeout)
            try:
                results = await group.join(timeout=timeout, return_exceptions=mode)
            except BaseException as exc:
                try:
                    if group.never_joined():
                        # join refused its arguments (a bad timeout or setting) before it
                        # began: the tasks must not outlive the op, so they are stopped here.
                        await group.__aexit__(type(exc), exc, exc.__traceback__)
                finally:
                    _forget(self, tasks)
                    if group._joiner_logs:
                        # A raised failure is the caller's; a JoinTimeout or a cancel
                        # hands over none.
                        _log_unreceived(group, exc)
                raise
        if original is None:
            return results
        task_list = op_task_list(self)
        if task_list is not None:
            # Exactly this run's tasks (plus any put there by hand), in submit order.
            ours = set(tasks)
            kept = [t for t in task_list if t in ours or t not in _guarded_tasks]
            present = set(kept)
            kept += [t for t in tasks if t not in present]
            task_list[:] = _as_outcomes(kept, ours)
        kwargs: dict[str, Any] = {}
        if "timeout" in names or var_kw:
            kwargs["timeout"] = None  # every task is done: nothing left to time out
        if "return_exceptions" in names or var_kw:
            kwargs["return_exceptions"] = mode
        return await original(self, **kwargs)

    if original is not None:
        # Introspection shows the class's own join, whose meaning the wrapper keeps.
        functools.update_wrapper(join_async_task, original)
    setattr(join_async_task, ORIGINAL_ATTR, original)
    return join_async_task


def _as_outcomes(tasks: list[Any], ours: set[Any]) -> list[Any]:
    """The task list the original join gathers, a self-cancelled task by its outcome.

    A join that returned cancelled none of its tasks, so a task of ours that ended
    cancelled raised ``CancelledError`` itself (or someone else cancelled it). The group's
    rule is that its place holds a ``CancelledError`` naming it and the caller, who was
    not cancelled, is never handed one to raise; an original join that gathers would
    raise it, so it gathers a finished future holding that value instead.
    """
    if not any(t in ours and t.cancelled() for t in tasks):
        return tasks
    loop = asyncio.get_running_loop()
    out: list[Any] = []
    for t in tasks:
        if t in ours and t.cancelled():
            done = loop.create_future()
            done.set_result(outcome_of(t))
            t = done
        out.append(t)
    return out


async def _close_leftover(run: _Run, exc: BaseException | None) -> None:
    """Deal with tasks submitted in a run that ended without joining them.

    On success they are joined (as an ``async with`` group would be) and their failures
    logged, as nobody receives them; when the run failed or was cancelled they are cancelled.
    """
    group, tasks = run.group, run.tasks
    run.group, run.tasks = None, []
    if group is None:
        return
    try:
        if exc is None:
            logger.warning(
                "op %r returned without join_async_task(); joining its %d task(s)",
                run.name,
                len(tasks),
            )
            await group.join(return_exceptions=True)
        else:
            # The group's ``async with`` exit: cancel what is left, record why, bounded.
            await group.__aexit__(type(exc), exc, exc.__traceback__)
    finally:
        _forget(run.op, tasks)
        if group._joiner_logs:
            _log_unreceived(group)  # nobody receives these results


def _refuse_swallowed_deadline(name: str, task: asyncio.Task[Any] | None, before: int) -> None:
    """Raise ``DeadlineExceeded`` when a deadline cancelled the body and it returned anyway.

    Code that catches ``CancelledError`` and returns (agentscope's model call returns an
    "interrupted" response) would make a run cut short by its budget look like a success
    with nothing in it. The cancellation is still requested on the task (``cancelling()``
    above its count at entry, until the deadline's exit takes it back), and a deadline in
    force here has fired: then the op failed on its deadline, and says so.
    """
    if task is None or task.cancelling() <= before:
        return
    d = current_deadline()
    while d is not None and not (d.scope is not None and d.scope.expired):
        d = d.parent
    if d is None:
        return  # an outside cancellation, not a deadline: not ours to judge
    fired = d.binding()
    with _contained():
        trace.get_current_span().set_attribute(ATTR_CANCEL_SWALLOWED, True)
    record_deadline_exceeded(fired.name, fired.budget)
    raise DeadlineExceeded(
        f"op {name!r} ran out of its deadline {fired.name or '(unnamed)'!r} (budget "
        f"{fired.budget:g} s) and its body swallowed the cancellation: it caught "
        "CancelledError and returned normally, so its result is not a success",
        deadline_name=fired.name,
        budget=fired.budget,
    )


def _make_entry(
    original: Callable[..., Awaitable[Any]], spec: OpSpec
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(original)
    async def entry(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        outer = _current_run.get()
        task = asyncio.current_task()
        if outer is not None and outer.op is self and outer.task is task:
            # A guarded override calling super(): already inside this run's scope.
            return await original(self, *args, **kwargs)
        run = _Run(self, spec.op_name(self), task, outer)
        token = _current_run.set(run)

        async def body() -> Any:
            cancelling = task.cancelling() if task is not None else 0
            try:
                result = await original(self, *args, **kwargs)
                _refuse_swallowed_deadline(run.name, task, cancelling)
            except BaseException as exc:
                await _close_leftover(run, exc)
                raise
            await _close_leftover(run, None)
            return result

        try:
            return await run_in_scope(run.name, spec.budget, body)
        finally:
            _current_run.reset(token)

    setattr(entry, ORIGINAL_ATTR, original)
    return entry


# --- class transformation ----------------------------------------------------------------


def _async_entry(cls: type) -> str | None:
    """The name of the class's async entry point, or ``None``."""
    for attr in _ENTRY_NAMES:
        fn = find_original(cls, attr)
        if fn is None:
            continue
        if attr in _ASYNC_ONLY_ENTRIES and not inspect.iscoroutinefunction(fn):
            continue  # a sync execute: the sync side's
        return attr
    return None


def _no_entry_point(cls: type) -> str:
    """The refusal of a class with no entry point, naming every one that is accepted."""
    async_names = [f"async def {n}()" for n in _ENTRY_NAMES if n not in _ASYNC_ONLY_ENTRIES]
    async_only = [f"async def {n}() (flowllm 0.3's BaseStep)" for n in _ASYNC_ONLY_ENTRIES]
    sync_names = " or ".join(f"def {n}()" for n in SYNC_ENTRY_NAMES)
    accepted = [*async_names, *async_only, f"a sync {sync_names} (flowllm 0.2's BaseOp)"]
    return (
        f"guarded_op: {cls.__qualname__} has neither an async nor a sync entry point; "
        f"define one of: {', '.join(accepted)}; a Ray op (flowllm's BaseRayOp) is "
        f"recognised by its {_RAY_SUBMIT}()"
    )


def _guard_class(cls: type, spec: OpSpec, *, strict: bool) -> None:
    # For the HANGGUARD_BUDGETS typo check: the name this class's runs take.
    _config.note_op_name(spec.name or cls.__name__, cls)
    entry_attr = _async_entry(cls)
    if entry_attr is None and _RAY_SUBMIT in dir(cls):
        # A Ray op (flowllm's BaseRayOp shape): guarded by hangguard.ray, imported only
        # here (without the ray extra this fails with the pip command to run).
        from .ray._op import guard_ray_class

        guard_ray_class(cls, name=spec.name, budget=spec.budget)
        setattr(cls, SPEC_ATTR, spec)
        return
    has_sync_entry = guard_sync(cls, spec)
    if entry_attr is None:
        if strict and not has_sync_entry:
            raise TypeError(_no_entry_point(cls))
    else:
        original = find_original(cls, entry_attr)
        assert original is not None
        if not inspect.iscoroutinefunction(original):
            raise TypeError(
                f"guarded_op: {cls.__qualname__}.{entry_attr} must be an async def method"
            )
        setattr(cls, entry_attr, _make_entry(original, spec))
    setattr(cls, _SUBMIT, _guarded_submit)
    setattr(cls, _JOIN, _make_join(find_original(cls, _JOIN)))
    setattr(cls, SPEC_ATTR, spec)


def _not_a_class(what: str, got: object) -> str:
    """The refusal of a non-class, with the fix for the two usual slips."""
    if is_number(got):
        return f"{what}, got {got!r}: for a budget, write guarded_op(budget={got!r})"
    if callable(got):
        return (
            f"{what}, got the function {callable_name(got)!r}: "
            "for a function, use @hangguard.traced (a span and a deadline around it)"
        )
    return f"{what}, got {got!r}"


@overload
def guarded_op(cls: C, /) -> C: ...


@overload
def guarded_op(name: str | None = None, /, *, budget: float | None = None) -> Callable[[C], C]: ...


@overload
def guarded_op(*, name: str | None = None, budget: float | None = None) -> Callable[[C], C]: ...


def guarded_op(
    cls_or_name: type | str | None = None,
    /,
    *,
    name: str | None = None,
    budget: float | None = None,
) -> Any:
    """Guard an op class: a span and a deadline per run, sub-tasks in a TaskGroup.

    The class keeps its methods and results; its entry point (``async_call``, else
    ``async_execute``) runs in a span and a deadline named ``name`` (default: the class
    name) with budget ``budget``, else its ``HANGGUARD_BUDGETS`` entry, else
    ``HANGGUARD_DEFAULT_BUDGET``. ``submit_async_task`` / ``join_async_task`` go through a
    per-run :class:`~hangguard.TaskGroup`; the class's own join still shapes the
    results. See the module docs for the details::

        @hangguard.guarded_op(budget=120)
        class CompanySegmentFactorOp(BaseAsyncOp):
            async def async_execute(self):
                for query in self.queries:
                    self.submit_async_task(self.ops[0].copy().async_call, query=query)
                return await self.join_async_task(timeout=60, return_exceptions=True)
    """
    if isinstance(cls_or_name, type):
        _guard_class(cls_or_name, OpSpec(check_name(name), check_budget(budget)), strict=True)
        return cls_or_name
    if cls_or_name is not None and not isinstance(cls_or_name, str):
        raise TypeError(_not_a_class("guarded_op() takes a class or a name", cls_or_name))
    if cls_or_name is not None and name is not None:
        raise TypeError("guarded_op() got the name twice (positional and name=)")
    spec = OpSpec(
        check_name(cls_or_name if cls_or_name is not None else name), check_budget(budget)
    )

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise TypeError(_not_a_class("guarded_op() decorates a class", cls))
        _guard_class(cls, spec, strict=True)
        return cls

    return decorate


class GuardedOpMixin:
    """What :func:`guarded_op` does, as a base class; subclasses are guarded as defined.

    Put it first among the bases of an op class in the ``BaseAsyncOp`` pattern, or use
    it alone for a fresh op, which then gets the TaskGroup's semantics (results in
    submit order, the first failure raised once its siblings are cancelled). ``name``
    and ``budget`` are class keywords, inherited by subclasses unless they give their own::

        class SearchOp(hangguard.GuardedOpMixin, budget=30):
            async def async_execute(self, query: str) -> list[str]:
                ...

        class FanOutOp(hangguard.GuardedOpMixin):
            async def async_execute(self, queries: list[str]) -> list[list[str]]:
                for q in queries:
                    self.submit_async_task(SearchOp().async_execute, q)
                return await self.join_async_task(timeout=60)
    """

    def __init_subclass__(
        cls, /, *, name: str | None = None, budget: float | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        inherited = getattr(cls, SPEC_ATTR, None)
        base = inherited if isinstance(inherited, OpSpec) else OpSpec(None, None)
        spec = OpSpec(
            check_name(name) if name is not None else base.name,
            check_budget(budget) if budget is not None else base.budget,
        )
        # Not strict: an abstract intermediate base may define neither entry point.
        _guard_class(cls, spec, strict=False)

    # Loosely typed on purpose: the mixin goes in front of existing op bases, whose own
    # signatures it must stay compatible with.
    def submit_async_task(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start ``fn(*args, **kwargs)`` in this run's task group; returns the task.

        ``fn`` must be a coroutine function (``TypeError`` otherwise, where flowllm's
        ``BaseAsyncOp`` only logs a warning and drops the call).
        """
        return _guarded_submit(self, fn, *args, **kwargs)

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool | None = None
    ) -> Any:
        """Join this run's tasks: results in submit order (``return_exceptions``: False).

        ``timeout`` defaults to ``HANGGUARD_JOIN_TIMEOUT`` and is capped by the op's
        deadline; on timeout the rest are cancelled and :class:`~hangguard.JoinTimeout`
        carries the partial results.
        """
        return await _FRESH_JOIN(self, timeout, return_exceptions)


_FRESH_JOIN: Final = _make_join(None)
setattr(GuardedOpMixin.submit_async_task, FALLBACK_ATTR, True)
setattr(GuardedOpMixin.join_async_task, FALLBACK_ATTR, True)
