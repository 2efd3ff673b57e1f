"""``guarded_op`` for op classes that fan out to Ray (flowllm's ``BaseRayOp`` shape).

Such a class has ``submit_ray_task(fn, *args, **kwargs)`` (submit one remote task, remember
its ref in a list), ``join_ray_task(...)`` (``ray.get`` every ref, with no timeout, and shape
the results) and usually ``submit_and_join_ray_task`` on top of both. :func:`guard_ray_class`
changes three things:

* The sync entry (``call``, else ``execute``) runs in a span named for the op and a
  deadline of the same name, with the budget of every op (the decorator's ``budget``,
  else ``HANGGUARD_BUDGETS`` / ``HANGGUARD_DEFAULT_BUDGET``). Sync code is not interrupted
  by it; what it bounds is the join, and every remote task gets what is left of it.
* ``submit_ray_task`` submits through a :class:`~hangguard.ray.RemoteGroup` of this run
  (budget and trace carried to the worker, Ray retries within the budget) and appends the
  ref to the class's own list (``ray_task_list`` or ``_ray_task_list``), as before.
* ``join_ray_task`` first joins the group within the budget (no failure cancels the
  others, as the class's own join does not either); on time, it hands over to the
  class's own join, which finds every ref finished and shapes the results as before. On
  timeout the unfinished tasks are cancelled (forced after the grace), their refs leave
  the list and :class:`~hangguard.JoinTimeout` carries the partial results.

``submit_and_join_ray_task`` works unchanged on top. flowllm's own submit also starts Ray
when it is not running (``ray.init(num_cpus=ray_max_workers)``); the guarded submit leaves
that to Ray's automatic start, so call ``ray.init(...)`` yourself to choose its size.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from .. import _config, _spans
from .._deadline import deadline
from .._semconv import ATTR_OP_NAME, ATTR_TIMEOUT_S, SPAN_OP
from ._group import RemoteGroup

__all__ = ["guard_ray_class", "is_ray_op"]

logger = logging.getLogger("hangguard")

_SUBMIT: Final = "submit_ray_task"
_JOIN: Final = "join_ray_task"
_ENTRIES: Final = ("call", "execute")
_LISTS: Final = ("ray_task_list", "_ray_task_list")
# On every function installed here: the class's own one it replaced (None: nothing).
_ORIGINAL: Final = "__hangguard_ray_original__"
_INSTANCE_RUN: Final = "_hangguard_ray_run"


@dataclass(eq=False)
class _Run:
    """One run of a guarded Ray op: its remote tasks go to ``group``."""

    op: object
    name: str
    parent: _Run | None
    group: RemoteGroup | None = None
    refs: list[Any] = field(default_factory=list)


_current: ContextVar[_Run | None] = ContextVar("hangguard_ray_op_run", default=None)


def is_ray_op(cls: type) -> bool:
    """Whether ``cls`` has the Ray fan-out methods (and no async entry point)."""
    return _own(cls, _SUBMIT) is not None


def _own(cls: type, attr: str) -> Callable[..., Any] | None:
    """The class's own ``attr`` behind any wrapper installed here, or ``None``."""
    for klass in cls.__mro__:
        fn = klass.__dict__.get(attr)
        if fn is None:
            continue
        if hasattr(fn, _ORIGINAL):
            original: Callable[..., Any] | None = getattr(fn, _ORIGINAL)
            return original
        return fn  # type: ignore[no-any-return]
    return None


def _op_name(op: object, name: str | None) -> str:
    return name or type(op).__name__


def _run_of(op: object, name: str | None) -> _Run:
    run = _current.get()
    while run is not None:
        if run.op is op:
            return run
        run = run.parent
    state = vars(op)
    run = state.get(_INSTANCE_RUN)
    if not isinstance(run, _Run) or run.op is not op:
        run = state[_INSTANCE_RUN] = _Run(op, _op_name(op, name), None)
    return run


def _ref_list(op: object) -> list[Any] | None:
    for attr in _LISTS:
        refs = getattr(op, attr, None)
        if isinstance(refs, list):
            return refs
    return None


def _forget(op: object, refs: list[Any]) -> None:
    ref_list = _ref_list(op)
    if ref_list is not None and refs:
        ours = {id(r) for r in refs}
        ref_list[:] = [r for r in ref_list if id(r) not in ours]


def _make_submit(name: str | None) -> Callable[..., Any]:
    def submit_ray_task(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Submit ``fn(*args, **kwargs)`` as a guarded Ray task of this run; returns ``self``."""
        run = _run_of(self, name)
        if run.group is None:
            run.group = RemoteGroup(run.name)
            run.refs = []
        ref = run.group.submit(fn, *args, **kwargs)
        run.refs.append(ref)
        ref_list = _ref_list(self)
        if ref_list is not None:
            ref_list.append(ref)  # the class's own join gathers them
        return self

    setattr(submit_ray_task, _ORIGINAL, None)
    return submit_ray_task


def _make_join(original: Callable[..., Any] | None, name: str | None) -> Callable[..., Any]:
    def join_ray_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        """Join this run's remote tasks within the op's budget, then shape as the class does."""
        run = _run_of(self, name)
        group, refs = run.group, run.refs
        run.group, run.refs = None, []
        results: list[Any] = []
        if group is not None:
            try:
                results = group.join(return_exceptions=True)
            except BaseException:
                _forget(self, refs)
                raise
        if original is None:
            return results
        return original(self, *args, **kwargs)

    if original is not None:
        functools.update_wrapper(join_ray_task, original)
    setattr(join_ray_task, _ORIGINAL, original)
    return join_ray_task


@contextlib.contextmanager
def _op_span(name: str, budget: float) -> Iterator[None]:
    tracer = _spans.get_tracer()
    if tracer is None:
        yield
        return
    attributes: dict[str, Any] = {ATTR_OP_NAME: name}
    if budget != float("inf"):
        attributes[ATTR_TIMEOUT_S] = budget
    with tracer.start_as_current_span(
        SPAN_OP.format(name),
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            _spans.record_failure(span, exc)
            raise


def _close_leftover(run: _Run, failed: bool) -> None:
    """Tasks submitted in a run that ended without joining them: join or stop them."""
    group, refs = run.group, run.refs
    run.group, run.refs = None, []
    if group is None:
        return
    try:
        if not failed:
            logger.warning(
                "op %r returned without join_ray_task(); joining its %d remote task(s)",
                run.name,
                len(refs),
            )
            group.join(return_exceptions=True)
        else:
            group.__exit__(RuntimeError, RuntimeError("the op failed"), None)
    finally:
        _forget(run.op, refs)


def _make_entry(original: Callable[..., Any], name: str | None, budget: float | None) -> Any:
    @functools.wraps(original)
    def entry(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        outer = _current.get()
        if outer is not None and outer.op is self:
            return original(self, *args, **kwargs)  # a guarded override calling super()
        op_name = _op_name(self, name)
        seconds = budget if budget is not None else _config.op_budget(op_name)
        run = _Run(self, op_name, outer)
        token = _current.set(run)
        try:
            with _op_span(op_name, seconds), deadline(seconds, name=op_name):
                try:
                    result = original(self, *args, **kwargs)
                except BaseException:
                    _close_leftover(run, failed=True)
                    raise
                _close_leftover(run, failed=False)
                return result
        finally:
            _current.reset(token)

    setattr(entry, _ORIGINAL, original)
    return entry


def guard_ray_class(cls: type, *, name: str | None, budget: float | None) -> None:
    """Install the guarded entry, ``submit_ray_task`` and ``join_ray_task`` on ``cls``."""
    entry_attr = next((a for a in _ENTRIES if _own(cls, a) is not None), None)
    if entry_attr is not None:
        original = _own(cls, entry_attr)
        assert original is not None
        setattr(cls, entry_attr, _make_entry(original, name, budget))
    setattr(cls, _SUBMIT, _make_submit(name))
    setattr(cls, _JOIN, _make_join(_own(cls, _JOIN), name))
