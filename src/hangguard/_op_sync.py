"""Guarded sync ops: flowllm's ``BaseOp`` pattern (``call``/``execute``, ``submit_task`` /
``join_task`` over a thread pool) with the guarantees of the async ops.

:func:`hangguard.guarded_op` applies this to a class that has a sync entry point (``call``,
else ``execute``) or ``submit_task`` / ``join_task``, next to what it does for the async
ones:

* The entry runs in a span named for the op and in a deadline of the same name (budget:
  the decorator's, else ``HANGGUARD_BUDGETS`` by name, else ``HANGGUARD_DEFAULT_BUDGET``).
  In sync code the deadline is not enforced by itself: ``join_task`` and
  :func:`hangguard.checkpoint` enforce it, and :func:`hangguard.remaining` reads it.
* ``submit_task(fn, *args, **kwargs)`` goes through a :class:`~hangguard.ThreadGroup` of
  this run, which hands the call to the class's own ``submit_task``: the class still picks
  the pool (``C.thread_pool``), appends the future to ``task_list``, or with
  multithreading off runs the function inline, as it did before.
* ``join_task(task_desc=None, *, timeout=None, return_exceptions=None)`` joins that group
  within ``min(timeout, the op's deadline)``: on time whatever the threads do, with
  :class:`~hangguard.JoinTimeout` and the stuck threads' stacks when they do not finish.
  Then the class's own ``join_task`` shapes the finished results as before (for
  flowllm: lists flattened, falsy results dropped); with ``return_exceptions=True`` a
  failure stands in its place as a value.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import _config, _inflight, _ps, _spans
from ._deadline import deadline, remaining
from ._op_spec import ORIGINAL_ATTR, OpSpec, find_original, op_task_list, submit_label
from ._threads import ThreadGroup

__all__ = ["guard_sync"]

logger = logging.getLogger("hangguard")

R = TypeVar("R")

_SUBMIT: Final = "submit_task"
_JOIN: Final = "join_task"
_ENTRY_NAMES: Final = ("call", "execute")
_INSTANCE_RUN: Final = "_hangguard_sync_run"


@dataclass(slots=True, eq=False)
class _SyncRun:
    """One run of a guarded sync op: its sub-tasks go to ``group``, made on first submit."""

    op: object
    name: str
    thread: int | None
    parent: _SyncRun | None
    group: ThreadGroup | None = None
    executor: _OpExecutor | None = None


_current_run: ContextVar[_SyncRun | None] = ContextVar("hangguard_sync_op_run", default=None)


def run_in_scope_sync(name: str, budget: float | None, body: Callable[[], R]) -> R:
    """Call ``body()`` in a span and a deadline, both named ``name`` (the sync scope)."""
    seconds = budget if budget is not None else _config.op_budget(name)
    _ps.maybe_start()  # HANGGUARD_PS=1: the watcher starts at the first op, never at import
    tracer = _spans.get_tracer()
    with deadline(seconds, name=name):
        if tracer is None:
            with _inflight.tracking(_inflight.OP, name):  # in `hangguard ps` while it runs
                return body()
        span = _spans.start_op_span(tracer, name, seconds, remaining())
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            with _inflight.tracking(_inflight.OP, name, span=span):
                return body()
        except BaseException as exc:
            _spans.record_failure(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()


class _OpExecutor(Executor):
    """The executor of an op's thread group: the class's own ``submit_task``.

    The class decides where the call runs (its pool, or inline with multithreading off)
    and keeps its ``task_list``; the group gets the future that was appended to it.
    """

    def __init__(self, op: object, original: Callable[..., Any]) -> None:
        self.op = op
        self.original = original
        self.returned: Any = None
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        task_list = op_task_list(self.op)
        before = len(task_list) if task_list is not None else 0
        self.returned = self.original(self.op, fn, *args, **kwargs)
        if task_list is not None:
            for item in task_list[before:]:
                if isinstance(item, Future):
                    self.futures.append(item)
                    return item
        # Run inline (multithreading off): the call is over, its outcome recorded.
        done: Future[Any] = Future()
        done.set_result(None)
        return done


def _run_of(op: object) -> _SyncRun:
    run = _current_run.get()
    while run is not None:
        if run.op is op:
            return run
        run = run.parent
    try:
        state = vars(op)
    except TypeError:
        raise TypeError(
            f"{type(op).__name__}.submit_task() called outside a guarded run, and the op has "
            "no __dict__ to keep its thread group on"
        ) from None
    run = state.get(_INSTANCE_RUN)
    if not isinstance(run, _SyncRun) or run.op is not op:
        spec = getattr(type(op), "__hangguard_op__", None)
        name = spec.op_name(op) if isinstance(spec, OpSpec) else type(op).__name__
        run = state[_INSTANCE_RUN] = _SyncRun(op, name, None, None)
    return run


def _make_submit(original: Callable[..., Any] | None) -> Callable[..., Any]:
    def submit_task(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in this run's thread group (see :func:`guarded_op`)."""
        run = _run_of(self)
        if run.group is None:
            run.executor = _OpExecutor(self, original) if original is not None else None
            run.group = ThreadGroup(run.name, executor=run.executor)
        index = len(run.group)
        run.group.submit_named(f"{submit_label(fn)}[{index}]", fn, *args, **kwargs)
        if run.executor is not None:
            return run.executor.returned
        return self

    if original is not None:
        functools.update_wrapper(submit_task, original)
    setattr(submit_task, ORIGINAL_ATTR, original)
    return submit_task


def _join_kwargs(
    original: Callable[..., Any], task_desc: Any, mode: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the class's own join takes, from ours."""
    params = list(inspect.signature(original).parameters.values())[1:]  # without self
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    if task_desc is not None:
        if "task_desc" in names or var_kw:
            kwargs["task_desc"] = task_desc
        elif params and params[0].kind is params[0].POSITIONAL_OR_KEYWORD:
            args = (task_desc,)
    if "timeout" in names or var_kw:
        kwargs["timeout"] = None  # every call is done: nothing left to time out
    if "return_exceptions" in names or var_kw:
        kwargs["return_exceptions"] = mode
    return args, kwargs


def _settled(value: Any) -> Future[Any]:
    done: Future[Any] = Future()
    done.set_result(value)
    return done


def _forget(op: object, futures: list[Future[Any]]) -> None:
    task_list = op_task_list(op)
    if task_list is not None and futures:
        ours = {id(f) for f in futures}
        task_list[:] = [t for t in task_list if id(t) not in ours]


def _make_join(original: Callable[..., Any] | None) -> Callable[..., Any]:
    default_re = False
    if original is not None:
        param = inspect.signature(original).parameters.get("return_exceptions")
        if param is not None and param.default is not inspect.Parameter.empty:
            default_re = bool(param.default)

    def join_task(
        self: Any,
        task_desc: str | None = None,
        *,
        timeout: float | None = None,
        return_exceptions: bool | None = None,
    ) -> Any:
        """Join this run's threads within min(timeout, the op's deadline) (see guarded_op)."""
        mode = default_re if return_exceptions is None else return_exceptions
        run = _run_of(self)
        group, executor = run.group, run.executor
        run.group, run.executor = None, None  # the next submit starts a new group
        results: list[Any] = []
        futures = executor.futures if executor is not None else []
        futures_ids = {id(f) for f in futures}
        if group is not None:
            try:
                results = group.join(timeout=timeout, return_exceptions=mode)
            except BaseException:
                _forget(self, futures)
                raise
        if original is None:
            return results
        if futures and group is not None:
            # The class's join reads finished futures: hand it each call's outcome (an
            # exception as a value, in its place, when return_exceptions is on).
            outcome = {id(f): results[i] for i, f in group.futures() if id(f) in futures_ids}
            task_list = op_task_list(self)
            if task_list is not None:
                task_list[:] = [
                    _settled(outcome[id(t)]) if id(t) in outcome else t for t in task_list
                ]
        args, kwargs = _join_kwargs(original, task_desc, mode)
        return original(self, *args, **kwargs)

    if original is not None:
        functools.update_wrapper(join_task, original)
    setattr(join_task, ORIGINAL_ATTR, original)
    return join_task


def _close_leftover(run: _SyncRun, exc: BaseException | None) -> None:
    """Threads submitted in a run that ended without ``join_task``: joined or given up."""
    group, executor = run.group, run.executor
    run.group, run.executor = None, None
    if group is None:
        return
    futures = executor.futures if executor is not None else []
    try:
        if exc is None:
            logger.warning(
                "op %r returned without join_task(); joining its %d task(s)", run.name, len(group)
            )
            group.join(return_exceptions=True)
        else:
            group.__exit__(type(exc), exc, exc.__traceback__)
    finally:
        _forget(run.op, futures)


def _make_entry(original: Callable[..., Any], spec: OpSpec) -> Callable[..., Any]:
    @functools.wraps(original)
    def entry(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        outer = _current_run.get()
        thread = threading.get_ident()
        if outer is not None and outer.op is self and outer.thread == thread:
            return original(self, *args, **kwargs)  # a guarded override calling super()
        run = _SyncRun(self, spec.op_name(self), thread, outer)
        token = _current_run.set(run)

        def body() -> Any:
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                _close_leftover(run, exc)
                raise
            _close_leftover(run, None)
            return result

        try:
            return run_in_scope_sync(run.name, spec.budget, body)
        finally:
            _current_run.reset(token)

    setattr(entry, ORIGINAL_ATTR, original)
    return entry


def guard_sync(cls: type, spec: OpSpec) -> bool:
    """Guard the sync side of an op class; returns whether it has one.

    The sync side is a sync ``call``/``execute`` entry point, or ``submit_task`` /
    ``join_task``. ``async def`` methods of those names are left alone.
    """
    entry_attr = None
    for attr in _ENTRY_NAMES:
        fn = find_original(cls, attr)
        if fn is not None and not inspect.iscoroutinefunction(fn):
            entry_attr = attr
            break
    submit = find_original(cls, _SUBMIT)
    join = find_original(cls, _JOIN)
    if submit is not None and inspect.iscoroutinefunction(submit):
        submit = None
    if join is not None and inspect.iscoroutinefunction(join):
        join = None
    if entry_attr is None and submit is None and join is None:
        return False
    if entry_attr is not None:
        original = find_original(cls, entry_attr)
        assert original is not None
        setattr(cls, entry_attr, _make_entry(original, spec))
    setattr(cls, _SUBMIT, _make_submit(submit))
    setattr(cls, _JOIN, _make_join(join))
    return entry_attr is not None
