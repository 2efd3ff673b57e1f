"""What every guarded group means, whatever runs its work: tasks, threads or Ray tasks.

:class:`~hangguard.TaskGroup`, :class:`~hangguard.ThreadGroup` and the Ray ``RemoteGroup``
share one set of semantics, held here so that a fix is made once and holds for all three:
the constructor's checks (:class:`GroupSettings`), how ``join`` resolves its timeout, grace
and results mode, why a join that ran out of time stopped (:func:`timeout_cut`), the
:class:`JoinTimeout` it raises (:func:`join_timeout`), the group span's start and end, and
the group's in-flight entry. Each backend keeps only what starts, cancels, waits for and
abandons its own unit of work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from . import _config, _inflight, _metrics, _semconv, _spans
from ._deadline import Deadline, check_timeout, current_deadline
from ._exceptions import ConfigError, DeadlineExceeded, JoinTimeout
from ._semconv import (
    ATTR_GROUP_ABANDONED,
    ATTR_GROUP_CANCEL_IGNORED,
    ATTR_GROUP_CANCELLED,
    ATTR_GROUP_FAILED,
    ATTR_GROUP_LIMIT,
    ATTR_GROUP_NAME,
    ATTR_GROUP_SERIAL,
    ATTR_GROUP_SIZE,
    ATTR_GROUP_TIMED_OUT,
    CANCEL_DEADLINE,
    CANCEL_TIMEOUT,
    SPAN_GROUP,
)
from ._validate import check_whole

__all__ = [
    "GroupSettings",
    "TimeoutCut",
    "budget_text",
    "child_state",
    "end_group_span",
    "grace_or_default",
    "join_timeout",
    "not_finished",
    "record_outcomes",
    "register",
    "start_group_span",
    "timeout_cut",
]

logger = logging.getLogger("hangguard")

#: How many pending task names a JoinTimeout's message lists before "...".
SHOWN_PENDING = 5


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """A group's constructor arguments, checked, with ``HANGGUARD_SERIAL`` applied.

    Made by :meth:`check` when the group is built, so a bad argument or a bad env value
    fails the constructor, naming the parameter or the variable::

        settings = GroupSettings.check("fetch", timeout=30, return_exceptions=None, limit=4)
        own, grace = settings.join_budget(None)  # 30.0 and HANGGUARD_CANCEL_GRACE
    """

    name: str
    timeout: float | None
    return_exceptions: bool | None
    serial: bool
    #: The limit in force: 1 under ``HANGGUARD_SERIAL=1``, else the ``limit`` argument.
    limit: int | None

    @classmethod
    def check(
        cls,
        name: str,
        *,
        timeout: float | None,
        return_exceptions: bool | None,
        limit: int | None,
    ) -> GroupSettings:
        checked = None if timeout is None else check_timeout(timeout, "timeout")
        if limit is not None:
            check_whole(limit, "limit")
        serial = _config.serial()
        return cls(name, checked, return_exceptions, serial, 1 if serial else limit)

    def join_budget(self, timeout: float | None) -> tuple[float, float]:
        """The join's own timeout and its cancel grace, read before anything changes.

        ``timeout`` (join's argument) wins over the group's, then ``HANGGUARD_JOIN_TIMEOUT``;
        a bad value raises here, leaving the group joinable.
        """
        if timeout is not None:
            own = check_timeout(timeout, "timeout")
        elif self.timeout is not None:
            own = self.timeout
        else:
            own = _config.join_timeout()
        return own, _config.cancel_grace()

    def collects(self, return_exceptions: bool | None) -> bool:
        """Whether a join collects exceptions: its own argument, else the group's, else not."""
        if return_exceptions is not None:
            return return_exceptions
        return bool(self.return_exceptions)

    def held_text(self) -> str:
        """What held a task back before it started (for its slot's message)."""
        return "HANGGUARD_SERIAL=1" if self.serial else f"limit={self.limit}"


@dataclass(frozen=True, slots=True)
class TimeoutCut:
    """Why a join ran out of time: the cancel record it writes and the JoinTimeout's terms."""

    reason: str
    cause: str
    deadline_name: str | None
    budget: float
    #: The enclosing deadline that bound the join, when one did.
    bound: Deadline | None


def timeout_cut(group: str, own: float, left: float, by_deadline: bool) -> TimeoutCut:
    """The join's own timeout (``own``) or the enclosing deadline (``left``), whichever bound."""
    if by_deadline:
        current = current_deadline()
        bound = current.binding() if current is not None else None
        if bound is None:
            return TimeoutCut(CANCEL_DEADLINE, "", None, left, None)
        return TimeoutCut(CANCEL_DEADLINE, bound.name or "", bound.name, bound.budget, bound)
    return TimeoutCut(CANCEL_TIMEOUT, group, f"join {group}", own, None)


def budget_text(budget: float) -> str:
    return "no limit" if math.isinf(budget) else f"{budget:g}s"


def not_finished(what: str, deadline_name: str | None, budget: float) -> DeadlineExceeded:
    """What stands in the place of a task the join gave up on: ``what`` says what became of it."""
    label = deadline_name or "(unnamed)"
    return DeadlineExceeded(f"{what} {label!r}", deadline_name=deadline_name, budget=budget)


def join_timeout(
    group: str,
    *,
    total: int,
    results: list[Any],
    pending: Sequence[str],
    deadline_name: str | None,
    budget: float,
    kind: str = "group",
    noun: str = "task(s)",
    detail: str = "",
    late: str = "",
) -> JoinTimeout:
    """The :class:`JoinTimeout` a join raises, one message for every kind of group."""
    label = deadline_name or "(unnamed)"
    shown = ", ".join(pending[:SHOWN_PENDING]) + (", ..." if len(pending) > SHOWN_PENDING else "")
    return JoinTimeout(
        f"{kind} {group!r}: {len(pending)} of {total} {noun} did not finish before {label!r} "
        f"({budget_text(budget)}){detail}: {shown}{late}",
        deadline_name=deadline_name,
        budget=budget,
        results=results,
        pending=list(pending),
    )


def start_group_span(tracer: Tracer, settings: GroupSettings) -> tuple[Span, otel_context.Context]:
    """Start the group span (its name, limit, serial mode) and the context its tasks join."""
    span = tracer.start_span(
        SPAN_GROUP.format(settings.name), attributes={ATTR_GROUP_NAME: settings.name}
    )
    if settings.limit is not None:
        span.set_attribute(ATTR_GROUP_LIMIT, settings.limit)
    if settings.serial:
        span.set_attribute(ATTR_GROUP_SERIAL, True)
    return span, trace.set_span_in_context(span)


def end_group_span(
    span: Span,
    *,
    size: int,
    failed: int,
    cancelled: int,
    timed_out: bool,
    first_failure: BaseException | None,
    ignored: int | None = None,
    abandoned: int | None = None,
) -> None:
    """Count the group's outcomes on its span and end it (even if a processor fails).

    ``first_failure`` is the error a fail-fast join raises (``None`` when it collects):
    the span records it unless the join timed out.
    """
    try:
        span.set_attribute(ATTR_GROUP_SIZE, size)
        span.set_attribute(ATTR_GROUP_FAILED, failed)
        span.set_attribute(ATTR_GROUP_CANCELLED, cancelled)
        if ignored is not None:
            span.set_attribute(ATTR_GROUP_CANCEL_IGNORED, ignored)
        if abandoned is not None:
            span.set_attribute(ATTR_GROUP_ABANDONED, abandoned)
        if timed_out:
            span.set_attribute(ATTR_GROUP_TIMED_OUT, True)
            span.set_attribute(_semconv.ATTR_ERROR_TYPE, "timeout")
            span.set_status(trace.Status(trace.StatusCode.ERROR, "join timed out"))
        elif first_failure is not None:
            _spans.record_failure(span, first_failure)
    finally:
        span.end()


def record_outcomes(counts: Mapping[str, int]) -> None:
    """One metric update per outcome of a finished group."""
    for outcome, n in counts.items():
        _metrics.record_task_outcome(outcome, n)


def register(
    name: str, span: Span | None, children: Callable[[], list[_inflight.Entry]]
) -> _inflight.Entry:
    """The group's one in-flight entry, whatever its size; its work is listed by ``children``
    only when a reader asks."""
    return _inflight.add(_inflight.open_entry(_inflight.GROUP, name, span=span, children=children))


def child_state(*, abandoned: bool, cancelled: bool, grace_over: bool) -> str:
    """How an unfinished unit of work is shown to an in-flight reader."""
    if abandoned:
        return _inflight.ABANDONED
    if cancelled:
        return _inflight.IGNORING_CANCEL if grace_over else _inflight.CANCELLING
    return _inflight.RUNNING


def grace_or_default() -> float:
    """The cancel grace, on a path that is already raising another error."""
    try:
        return _config.cancel_grace()
    except ConfigError:
        logger.error("using the default cancel grace", exc_info=True)
        return _config.DEFAULT_CANCEL_GRACE


class GroupBase:
    """What every group holds from its construction: name, checked settings, tracer, span.

    The backends subclass it and keep only their own unit of work's bookkeeping.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: float | None,
        return_exceptions: bool | None,
        limit: int | None,
    ) -> None:
        self._settings = GroupSettings.check(
            name, timeout=timeout, return_exceptions=return_exceptions, limit=limit
        )
        self.name = name
        self._return_exceptions = return_exceptions
        self._tracer = _spans.get_tracer()
        self._span: Span | None = None
        self._span_ctx: otel_context.Context | None = None
        self._entry: _inflight.Entry | None = None  # in the in-flight registry, once started

    # -- the in-flight registry: one entry per group, its tasks listed only when read --

    def _register(self) -> None:
        """Register the group once, when it starts: one entry, whatever its size."""
        self._entry = register(self.name, self._span, self._children)

    def _children(self) -> list[_inflight.Entry]:
        """One entry per unfinished unit of work, with its state (readers call it)."""
        return []

    def _unregister(self) -> None:
        """Leave the registry as the join ends (what it abandoned is listed elsewhere)."""
        if self._entry is not None:
            _inflight.discard(self._entry)
            self._entry = None

    def _start_span(self) -> None:
        """Start the group span (at its first submit, or on entering its block)."""
        assert self._tracer is not None
        self._span, self._span_ctx = start_group_span(self._tracer, self._settings)
