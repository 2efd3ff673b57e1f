"""Deadlines: absolute, monotonic, inherited through the context, enforced in tasks.

Inside, a deadline is an absolute time on hangguard's clock (``time.monotonic`` unless a
test swaps it); at the API it is relative seconds. ``math.inf`` means no deadline. A
nested deadline is the earlier of its own and the enclosing one; only the deadline that
binds arms a timer, so when an outer budget is the tighter one, the outer scope fires and
reports itself, and the inner scopes just let the cancellation through.

The cancellation a firing deadline sends carries a :class:`DeadlineCancel` as its
message, a value this module owns: :func:`deadline_cancel_of` tells a deadline's
cancellation from any other, so no reader parses text.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from ._exceptions import DeadlineExceeded
from ._late_timers import late_note
from ._validate import is_number

__all__ = [
    "Deadline",
    "DeadlineCancel",
    "DeadlineScope",
    "check_timeout",
    "current_deadline",
    "deadline",
    "deadline_cancel_of",
    "get_clock",
    "now",
    "remaining",
    "set_clock",
    "split_budget",
]

Clock = Callable[[], float]

_clock: Clock = time.monotonic
_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "hangguard_deadline", default=None
)


def get_clock() -> Clock:
    """The clock deadlines are measured on (``time.monotonic`` by default)."""
    return _clock


def set_clock(clock: Clock) -> Clock:
    """Replace the clock (for deterministic tests); returns the previous one."""
    global _clock
    previous, _clock = _clock, clock
    return previous


def now() -> float:
    """The current time on hangguard's clock."""
    return _clock()


def check_timeout(value: float | None, param: str, *, none_means: float = math.inf) -> float:
    """Validate a duration given as ``param``; ``None`` stands for ``none_means``.

    Rejects NaN, negative values and non-numbers with a ``ValueError`` / ``TypeError``
    that names ``param``, so the caller sees which argument was wrong.
    """
    if value is None:
        return none_means
    if not is_number(value):
        raise TypeError(f"{param} must be a number of seconds or None, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{param} must not be NaN")
    if seconds < 0:
        raise ValueError(f"{param} must be >= 0, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadline:
    """One deadline in the chain: what was asked, when it started, when it all ends.

    ``budget`` is the seconds this scope asked for; ``expires_at`` is the effective
    absolute expiry (the earlier of its own and its parent's), on hangguard's clock.
    """

    name: str | None
    budget: float
    started_at: float
    expires_at: float
    parent: Deadline | None = None
    # The task in which a timer at ``expires_at`` is armed; a nested scope in the same
    # task needs no timer of its own unless it is tighter.
    enforced_in: object = field(default=None, compare=False, repr=False)
    # The scope that put this deadline in force. A scope that exits in another context
    # (an async generator closed by the loop in another task) cannot reset the context
    # its deadline was set in: the task that entered it skips it from then on. Tasks
    # created meanwhile keep it, as every task keeps the deadline it inherited.
    scope: DeadlineScope | None = field(default=None, compare=False, repr=False)

    @property
    def own_expires_at(self) -> float:
        return self.started_at + self.budget

    def binding(self) -> Deadline:
        """The deadline in the chain that sets ``expires_at`` (the one that will fire)."""
        d = self
        while d.parent is not None and d.parent.expires_at <= d.own_expires_at:
            d = d.parent
        return d

    def remaining(self) -> float:
        """Seconds left before ``expires_at`` (never negative; ``math.inf`` when none)."""
        if math.isinf(self.expires_at):
            return math.inf
        return max(0.0, self.expires_at - _clock())


@dataclass(frozen=True, slots=True)
class DeadlineCancel:
    """The message of the cancellation a firing deadline sends: which deadline, what budget.

    It reads as ``hangguard deadline 'name' exceeded`` wherever the cancellation is
    printed; code that must know the cause asks :func:`deadline_cancel_of`.
    """

    name: str | None
    budget: float
    #: " (fired 1.9 s late: the loop was blocked in ...)" when the loop held the timer up.
    late: str = ""

    def __str__(self) -> str:
        return f"hangguard deadline {self.name or '(unnamed)'!r} exceeded{self.late}"


def deadline_cancel_of(exc: BaseException) -> DeadlineCancel | None:
    """The deadline whose firing sent the cancellation ``exc``, or ``None`` for any other.

    ::

        except asyncio.CancelledError as exc:
            cause = deadline_cancel_of(exc)
            reason = "deadline" if cause is not None else "parent_cancelled"
    """
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], DeadlineCancel):
        return args[0]
    return None


def _live(d: Deadline | None) -> Deadline | None:
    """``d``, or, when its scope exited elsewhere, the nearest ancestor still in force."""
    while (
        d is not None
        and d.scope is not None
        and d.scope._orphaned
        and d.enforced_in is _running_task()
    ):
        d = d.parent
    return d


def _running_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None  # no running loop: the deadline is readable but not enforced


def current_deadline() -> Deadline | None:
    """The innermost deadline in force in this context, or ``None``."""
    return _live(_current.get())


def remaining() -> float:
    """Seconds left before the current deadline; ``math.inf`` when there is none.

    Child code calls this to size its own work::

        timeout = min(30.0, hangguard.remaining())
    """
    d = _live(_current.get())
    if d is None or math.isinf(d.expires_at):
        return math.inf
    return max(0.0, d.expires_at - _clock())


def split_budget(
    timeout: float | None = None, *, fraction: float = 1.0, reserve: float = 0.0
) -> float:
    """A child's share of the current budget.

    ``min(timeout, remaining() * fraction, remaining() - reserve)``, never below zero:
    the child gets at most its own timeout, at most a fraction of what is left, and
    leaves ``reserve`` seconds for the parent to clean up and report::

        per_call = hangguard.split_budget(30, fraction=0.5, reserve=1.0)
    """
    own = check_timeout(timeout, "timeout")
    if not is_number(fraction):
        raise TypeError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    reserve = check_timeout(reserve, "reserve")
    left = remaining()
    if math.isinf(left):
        return own
    return max(0.0, min(own, left * fraction, left - reserve))


class DeadlineScope:
    """The context manager returned by :func:`deadline`; usable with ``with`` and ``async with``."""

    __slots__ = (
        "_budget",
        "_cancelling",
        "_deadline",
        "_due",
        "_fired",
        "_handle",
        "_late",
        "_name",
        "_orphaned",
        "_task",
        "_token",
    )

    def __init__(self, seconds: float | None, *, name: str | None = None) -> None:
        self._budget = check_timeout(seconds, "seconds")
        self._name = name
        self._token: contextvars.Token[Deadline | None] | None = None
        self._deadline: Deadline | None = None
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._fired = False
        self._orphaned = False
        self._due = 0.0
        self._late = ""

    @property
    def deadline(self) -> Deadline | None:
        """The deadline this scope put in force (``None`` before entry or with no limit)."""
        return self._deadline

    @property
    def expired(self) -> bool:
        """Whether this scope's own timer fired and cancelled the body."""
        return self._fired

    def remaining(self) -> float:
        d = self._deadline
        return math.inf if d is None else d.remaining()

    def __enter__(self) -> DeadlineScope:
        if self._token is not None:
            raise RuntimeError("a deadline scope cannot be entered twice")
        parent = _live(_current.get())
        if math.isinf(self._budget):
            # No limit of our own: the enclosing deadline stays the one in force.
            self._deadline = parent
            self._token = _current.set(parent)
            return self
        started = _clock()
        own = started + self._budget
        parent_at = parent.expires_at if parent is not None else math.inf
        task = _running_task()
        covered = (
            parent is not None
            and task is not None
            and parent.enforced_in is task
            and parent_at <= own
        )
        self._deadline = Deadline(
            name=self._name,
            budget=self._budget,
            started_at=started,
            expires_at=min(own, parent_at),
            parent=parent,
            enforced_in=task,
            scope=self,
        )
        self._token = _current.set(self._deadline)
        if task is not None and not covered:
            # Armed at the effective expiry: when the enclosing deadline was set in
            # another task, this task must still stop on time.
            self._arm(task, self._deadline.expires_at - started)
        return self

    def _arm(self, task: asyncio.Task[object], delay: float) -> None:
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self._due = loop.time() + max(0.0, delay)
        if delay <= 0:
            self._handle = loop.call_soon(self._on_timeout)
        else:
            self._handle = loop.call_at(self._due, self._on_timeout)

    def _on_timeout(self) -> None:
        self._handle = None
        if self._task is not None and not self._task.done():
            self._fired = True
            fired = self._deadline.binding() if self._deadline is not None else None
            name = fired.name if fired is not None else self._name
            budget = fired.budget if fired is not None else self._budget
            # A timer that fired late because the loop was blocked says so, and where.
            self._late = late_note(self._task.get_loop(), self._due)
            self._task.cancel(DeadlineCancel(name, budget, self._late))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Disarm first: nothing below may leave a timer that cancels the task later.
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        token = self._token
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:
                # Exiting in another context than the one entered: an async generator
                # closed by the loop in a task of its own. That context cannot be reset
                # from here (its task skips this scope from now on); this one is restored.
                self._orphaned = True
                if _current.get() is self._deadline:
                    old = token.old_value
                    _current.set(None if old is contextvars.Token.MISSING else old)
        if not self._fired or self._task is None:
            return
        if _running_task() is not self._task:
            # The cancellation went to the task that entered; only that task may take it
            # back, so it is left to stand there as a plain cancellation.
            return
        # uncancel() must run whenever we cancelled, so it comes before the type test.
        # issubclass, as asyncio.timeout does from 3.12: a CancelledError subclass is ours too.
        if (
            self._task.uncancel() <= self._cancelling
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        ):
            from ._spans import record_deadline_exceeded

            fired = self._deadline.binding() if self._deadline is not None else None
            name = fired.name if fired is not None else self._name
            budget = fired.budget if fired is not None else self._budget
            record_deadline_exceeded(name, budget)
            raise DeadlineExceeded(deadline_name=name, budget=budget, detail=self._late) from exc

    async def __aenter__(self) -> DeadlineScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def deadline(seconds: float | None, *, name: str | None = None) -> DeadlineScope:
    """Run a block within ``seconds``, or within the enclosing deadline if that is earlier.

    The deadline is carried in a contextvar, so tasks created inside inherit it and
    :func:`remaining` sees it. Inside an asyncio task it is enforced: when it passes the
    body is cancelled and :class:`DeadlineExceeded` is raised at the exit, naming it::

        async with hangguard.deadline(60, name="search-all"):
            await run_searches()

    ``None`` means no limit of its own. Outside a running task (plain ``with`` in sync
    code) the deadline is only readable, not enforced.
    """
    return DeadlineScope(seconds, name=name)
