"""What every guarded group means, whatever runs its work: tasks, threads or Ray tasks.

:class:`~hangguard.TaskGroup`, :class:`~hangguard.ThreadGroup` and the Ray ``RemoteGroup``
share one set of semantics, held here so that a fix is made once and holds for all three:
the constructor's checks (:class:`GroupSettings`), the group's life (:class:`GroupState`)
and results mode (fail fast or collect), how ``join`` opens (:class:`JoinStart`: its
timeout, grace and mode, read before anything changes), why a join that ran out of time
stopped (:func:`timeout_cut`), the :class:`JoinTimeout` it raises (:func:`join_timeout`),
the group span's start and end, and the group's in-flight entry. Each backend keeps only
what starts, cancels, waits for and abandons its own unit of work.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from . import _config, _inflight, _metrics, _semconv, _spans
from ._deadline import Deadline, check_timeout, current_deadline, remaining
from ._exceptions import (
    ConfigError,
    DeadlineExceeded,
    JoinTimeout,
    lazy_join_timeout,
    unfinished_task,
)
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
    ATTR_TIMEOUT_S,
    CANCEL_DEADLINE,
    CANCEL_TIMEOUT,
    SPAN_GROUP,
)
from ._validate import check_whole

__all__ = [
    "DONE",
    "JOINING",
    "OPEN",
    "SHUTTING_DOWN",
    "GroupBase",
    "GroupSettings",
    "GroupState",
    "JoinStart",
    "TimeoutCut",
    "budget_text",
    "child_state",
    "end_group_span",
    "grace_or_default",
    "join_timeout",
    "log_fail_fast",
    "not_finished",
    "record_outcomes",
    "register",
    "start_group_span",
    "timeout_cut",
]

logger = logging.getLogger("hangguard")

#: How many pending task names a JoinTimeout's message lists before "...".
SHOWN_PENDING = 5


class GroupState(enum.Enum):
    """Where a group is in its life; it only moves forward."""

    OPEN = "open"  # taking submits, not joined
    JOINING = "joining"  # join (or the block's exit) is waiting for the work
    SHUTTING_DOWN = "shutting down"  # work cancelled, the grace running
    DONE = "done"  # outcomes counted, span ended


# The members as plain module names: on Python 3.11 reading ``GroupState.DONE`` costs
# about 110 ns (the enum class's attribute lookup), a module global about 20 ns, and
# submit and every task's done-callback look at the state once each.
OPEN = GroupState.OPEN
JOINING = GroupState.JOINING
SHUTTING_DOWN = GroupState.SHUTTING_DOWN
DONE = GroupState.DONE


@dataclass(frozen=True, slots=True)
class JoinStart:
    """How a join opened: what :meth:`GroupBase._begin_join` read and decided, once.

    ``own`` is the join's own timeout, ``left`` what the enclosing deadline left when it
    began (its wait is the smaller, :attr:`limit`); ``fail_fast_now`` is true when this
    join switched fail-fast on for a group that was collecting, so the backend cancels
    for a failure that came before the join.
    """

    own: float
    grace: float
    left: float
    fail_fast_now: bool

    @property
    def limit(self) -> float:
        """How long the join waits: its own timeout, capped by the enclosing deadline."""
        return min(self.own, self.left)

    @property
    def by_deadline(self) -> bool:
        """Whether the enclosing deadline, not the join's own timeout, bounds the wait."""
        return self.left <= self.own


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
    return unfinished_task(f"{what} {label!r}", deadline_name, budget)


def log_fail_fast(
    group: str, first: str, exc: object, count: int, *, kind: str = "group", noun: str = "task"
) -> None:
    """The one WARNING of a fail-fast cancel, the same line for every kind of group.

    ``first`` names the task that failed with ``exc``; ``count`` is how many of the rest
    were cancelled (or, in threads, asked to stop). Logged once per group, by the group.
    """
    logger.warning(
        "%s %r: %s %r failed with %s, cancelling %d remaining task(s)",
        kind,
        group,
        noun,
        first,
        type(exc).__name__,
        count,
    )


def join_timeout(
    group: str,
    *,
    total: int,
    results: list[Any] | Callable[[], list[Any]],
    pending: Sequence[str],
    deadline_name: str | None,
    budget: float,
    kind: str = "group",
    noun: str = "task(s)",
    detail: str = "",
    late: str = "",
) -> JoinTimeout:
    """The :class:`JoinTimeout` a join raises, one message for every kind of group.

    ``results`` is the list, or a function that makes it when the exception's
    ``results`` are first read (see :func:`lazy_join_timeout`).
    """
    label = deadline_name or "(unnamed)"
    shown = ", ".join(pending[:SHOWN_PENDING]) + (", ..." if len(pending) > SHOWN_PENDING else "")
    message = (
        f"{kind} {group!r}: {len(pending)} of {total} {noun} did not finish before {label!r} "
        f"({budget_text(budget)}){detail}: {shown}{late}"
    )
    if callable(results):
        return lazy_join_timeout(
            message,
            deadline_name=deadline_name,
            budget=budget,
            pending=list(pending),
            make_results=results,
        )
    return JoinTimeout(
        message, deadline_name=deadline_name, budget=budget, results=results, pending=list(pending)
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
    """What every group holds and decides, whatever runs its work.

    Its name, checked settings, tracer and span; its life (:class:`GroupState`); its
    results mode, by one rule for every backend: an explicit ``return_exceptions=False``
    fails fast from the start, a ``with`` block fails fast unless told otherwise, and
    ``join``'s own argument decides from then on (``True`` collects even in a group made
    to fail fast; what was cancelled already stays cancelled). The backends subclass it
    and keep only their own unit of work's bookkeeping.
    """

    #: How errors name the group ("task group 'fetch' was already joined").
    _kind: ClassVar[str] = "group"

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
        self._state = OPEN
        # Fail fast: cancel the rest on the first failure (else collect every outcome).
        self._fail_fast = return_exceptions is False
        self._grace = math.inf  # the join's cancel grace, once it has begun

    # -- the group's life and results mode ----------------------------------------------

    def _already_joined(self) -> RuntimeError:
        """The error of a submit or a second join once a join has begun."""
        return RuntimeError(f"{self._kind} {self.name!r} was already joined")

    def _enter_mode(self) -> None:
        """Entering ``with``/``async with``: fail fast unless the group was told otherwise."""
        if self._return_exceptions is None:
            self._fail_fast = True

    def _start_group(self) -> None:
        """The group starts (first submit, or entering its block): span, then entry, once.

        The span comes first so the entry carries it: a reader shows the group's own ids,
        and a termination record can end the group span.
        """
        if self._tracer is not None and self._span is None:
            self._start_span()
        if self._entry is None:
            self._register()

    def _enter_block(self) -> None:
        """Entering ``with``/``async with``: the mode rule, and the group starts."""
        self._enter_mode()
        self._start_group()

    def _begin_join(self, timeout: float | None, return_exceptions: bool | None) -> JoinStart:
        """Open the join: check, read the budget and mode, then move the group on.

        Every argument and env value is read before anything changes, so a bad one
        raises here and leaves the group joinable (and its work running, for its owner
        to cancel).
        """
        if self._state is not OPEN:
            raise self._already_joined()
        own, grace = self._settings.join_budget(timeout)
        fail_fast = not self._settings.collects(return_exceptions)
        left = remaining()
        self._state = JOINING
        self._grace = grace
        fail_fast_now = fail_fast and not self._fail_fast
        self._fail_fast = fail_fast
        if self._span is not None and not math.isinf(own):
            self._span.set_attribute(ATTR_TIMEOUT_S, own)
        return JoinStart(own, grace, left, fail_fast_now)

    def _mark_done(self) -> bool:
        """Move the group to its end; false if it was there already (finish once)."""
        if self._state is DONE:
            return False
        self._state = DONE
        return True

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
