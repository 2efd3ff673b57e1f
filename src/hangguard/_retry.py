"""Retries that respect the deadline and cannot multiply: ``retry``, ``retry_call``.

Every use of tenacity is in this module. The first attempt runs as a plain call, so a
call that succeeds costs next to nothing; only after a retryable failure is a
tenacity ``AsyncRetrying`` built (one per call, as tenacity keeps per-run state on it),
and the first failure is handed to it as its attempt 1.

Three things bound the retrying, checked in this order after each failure:

* ``attempts`` in all (``HANGGUARD_RETRY_ATTEMPTS``, 3, when not given);
* the enclosing deadline: when the next backoff plus ``min_attempt`` no longer fits in
  :func:`~hangguard.remaining`, it stops and the span gets
  ``hangguard.retry.budget_exhausted``;
* the retry budget of the call tree (:func:`retry_budget`): when it refuses, the span
  gets ``hangguard.retry.budget_refused``.

Either way the last real exception is raised, never a ``tenacity.RetryError``.
The library's own callers (the MCP client, the HTTP transports) use the same engine
through :func:`run_retrying` and its blocking twin :func:`run_retrying_sync`, which also
take ``by_time``: failures that never reached the peer (a refused connection) are retried
until the deadline rather than counted, so a peer that comes back within the budget
serves the call.
Cancellation is never retried. Each attempt runs under its own deadline named
``"<name> attempt <n>"`` when ``attempt_timeout`` is given; that attempt timing out is
retried, the enclosing deadline firing is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception
from tenacity.wait import wait_base, wait_exponential, wait_random

from . import _config
from ._deadline import Deadline, DeadlineScope, check_timeout, current_deadline
from ._exceptions import DeadlineExceeded
from ._metrics import record_retry, record_retry_refused
from ._retry_budget import RetryBudget, budget_var
from ._semconv import (
    ATTR_EXCEPTION_MESSAGE,
    ATTR_EXCEPTION_TYPE,
    ATTR_RETRY_ATTEMPT,
    ATTR_RETRY_ATTEMPTS,
    ATTR_RETRY_NAME,
    ATTR_RETRY_REMAINING_S,
    ATTR_RETRY_SLEEP_S,
    EVENT_RETRY,
    EVENT_RETRY_BUDGET_EXHAUSTED,
    EVENT_RETRY_BUDGET_REFUSED,
)
from ._spans import contained, error_type, safe_str
from ._validate import callable_name, check_whole

__all__ = [
    "Backoff",
    "RetryOn",
    "RetryPolicy",
    "backoff_enabled",
    "retry",
    "retry_call",
    "set_backoff_enabled",
]

#: Failures retried until the deadline instead of being counted (see ``run_retrying``).
ByTime: TypeAlias = Callable[[Exception], bool]

P = ParamSpec("P")
T = TypeVar("T")
_R = TypeVar("_R", AsyncRetrying, Retrying)

#: What to retry: exception classes, or a predicate given the exception.
RetryOn: TypeAlias = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]

logger = logging.getLogger("hangguard")

_backoff_enabled = True


def set_backoff_enabled(enabled: bool) -> bool:
    """Turn the waits between attempts on or off process-wide; returns the previous state.

    Tests use :func:`hangguard.testing.disable_backoff`, which wraps this.
    """
    global _backoff_enabled
    previous, _backoff_enabled = _backoff_enabled, bool(enabled)
    return previous


def backoff_enabled() -> bool:
    """Whether the waits between attempts are on (for retry loops outside tenacity)."""
    return _backoff_enabled


def _finite(value: float, param: str) -> float:
    seconds = check_timeout(value, param)
    if math.isinf(seconds):
        raise ValueError(f"{param} must be finite, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter: how long to wait before each retry.

    Before retry ``n`` (1 for the first) it waits
    ``min(initial * multiplier ** (n - 1), maximum)`` seconds plus a random
    ``0..jitter`` seconds, so that clients which failed together do not come back in
    lockstep::

        @hangguard.retry(backoff=hangguard.Backoff(initial=0.5, maximum=10, jitter=0.5))
        async def fetch() -> bytes: ...
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1
    _wait: wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        initial = _finite(self.initial, "Backoff.initial")
        maximum = check_timeout(self.maximum, "Backoff.maximum")
        jitter = _finite(self.jitter, "Backoff.jitter")
        multiplier = _finite(self.multiplier, "Backoff.multiplier")
        if multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier!r}")
        wait = wait_exponential(multiplier=initial, max=maximum, exp_base=multiplier)
        object.__setattr__(self, "_wait", wait + wait_random(0, jitter))


_DEFAULT_BACKOFF = Backoff()


def _matcher(on: object) -> Callable[[Exception], bool]:
    def is_exception_class(obj: object) -> bool:
        return isinstance(obj, type) and issubclass(obj, Exception)

    if is_exception_class(on) or (
        isinstance(on, tuple) and on and all(is_exception_class(t) for t in on)
    ):
        types: Any = on
        return lambda exc: isinstance(exc, types)
    if callable(on) and not isinstance(on, type):
        predicate: Callable[[Exception], bool] = on
        return lambda exc: bool(predicate(exc))
    raise TypeError(
        "on must be an Exception subclass, a non-empty tuple of them, or a predicate "
        f"taking the exception, got {on!r} (cancellation and interrupts are never retried)"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to retry: the arguments of :func:`retry`, as a value to pass to :func:`retry_call`.

    ``on`` says which failures of the call are retried; an attempt that ran out of its
    own ``attempt_timeout`` is always retried, whatever ``on`` says, because that timeout
    is the policy's own limit, not a failure of the call (leave ``attempt_timeout`` unset
    to retry only what ``on`` matches). ``attempts`` counts the first try (``None``:
    ``HANGGUARD_RETRY_ATTEMPTS``, read at each call, 3 when unset). ``attempt_timeout``
    caps each attempt (``None``: only the enclosing deadline applies). ``min_attempt`` is the
    least time worth starting another attempt with: 50 ms by default, because an attempt
    begun with less would almost surely time out and hide the real failure::

        policy = hangguard.RetryPolicy(attempts=5, on=ConnectionError, attempt_timeout=10)
        result = await hangguard.retry_call(lambda: client.ping(), policy)
    """

    attempts: int | None = None
    on: RetryOn = Exception
    backoff: Backoff = _DEFAULT_BACKOFF
    attempt_timeout: float | None = None
    min_attempt: float = 0.05
    _match: Callable[[Exception], bool] = field(init=False, repr=False, compare=False)
    _timeout: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attempts = self.attempts
        if attempts is not None:
            check_whole(attempts, "attempts")
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"backoff must be a hangguard.Backoff, got {self.backoff!r}")
        timeout = check_timeout(self.attempt_timeout, "attempt_timeout")
        if timeout == 0:
            raise ValueError("attempt_timeout must be > 0 (None for no per-attempt limit)")
        _finite(self.min_attempt, "min_attempt")
        object.__setattr__(self, "_match", _matcher(self.on))
        object.__setattr__(self, "_timeout", timeout)

    def _retrying(self, on: Callable[[Exception], bool]) -> RetryPolicy:
        """This policy retrying what the predicate ``on`` matches, on the hot path.

        The fields were checked when this policy was made: a transport that decides per
        request what is safe to retry copies them instead of checking them again.
        """
        new = object.__new__(RetryPolicy)
        for name in ("attempts", "backoff", "attempt_timeout", "min_attempt", "_timeout"):
            object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "on", on)
        object.__setattr__(new, "_match", on)
        return new


_DEFAULT_POLICY = RetryPolicy()


def _event(name: str, call: _Call[Any], attempt: int, exc: BaseException | None) -> None:
    with contained():
        _add_event(name, call, attempt, exc)


def _add_event(name: str, call: _Call[Any], attempt: int, exc: BaseException | None) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attrs: dict[str, AttributeValue] = {
        ATTR_RETRY_NAME: call.name,
        ATTR_RETRY_ATTEMPT: attempt,
        ATTR_RETRY_ATTEMPTS: call.attempts,
    }
    if exc is not None:
        attrs[ATTR_EXCEPTION_TYPE] = error_type(exc)
        attrs[ATTR_EXCEPTION_MESSAGE] = safe_str(exc)
    if call.sleep is not None:
        attrs[ATTR_RETRY_SLEEP_S] = call.sleep
    if name == EVENT_RETRY_BUDGET_EXHAUSTED:
        attrs[ATTR_RETRY_REMAINING_S] = call.remaining()
    span.add_event(name, attrs)


# The three outcomes of a failed attempt that is not the last, one function each, so
# that metrics can count them in one place.


def _on_retry(call: _Call[Any], attempt: int, exc: BaseException | None) -> None:
    _event(EVENT_RETRY, call, attempt, exc)
    record_retry(call.name)
    logger.warning(
        "retrying %s: attempt %d of %d failed with %s: %s; next attempt in %.3gs",
        call.name,
        attempt,
        call.attempts,
        type(exc).__name__,
        safe_str(exc),
        call.sleep or 0.0,
    )


def _on_budget_exhausted(call: _Call[Any], attempt: int, exc: BaseException | None) -> None:
    # Not logged: the caller gets the exception and decides whether to log it.
    _event(EVENT_RETRY_BUDGET_EXHAUSTED, call, attempt, exc)


def _on_budget_refused(call: _Call[Any], attempt: int, exc: BaseException | None) -> None:
    _event(EVENT_RETRY_BUDGET_REFUSED, call, attempt, exc)
    record_retry_refused(call.name)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class _Call(Generic[T]):
    """One retried call: the attempts, and the callbacks tenacity drives them with."""

    __slots__ = (
        "attempts",
        "budget",
        "by_time",
        "fn",
        "granted",
        "last",
        "name",
        "outer",
        "policy",
        "sleep",
        "timed_out",
    )

    def __init__(
        self,
        fn: Callable[[], Any],
        policy: RetryPolicy,
        name: str,
        attempts: int,
        budget: RetryBudget | None,
        by_time: ByTime | None = None,
    ) -> None:
        self.fn = fn
        self.by_time = by_time
        self.policy = policy
        self.name = name
        self.attempts = attempts
        self.budget = budget
        self.outer: Deadline | None = current_deadline()
        self.sleep: float | None = None
        # The exception of the last attempt that ran out of its own attempt_timeout.
        self.timed_out: BaseException | None = None
        # The failure of the last attempt, and whether the budget granted the next one.
        self.last: BaseException | None = None
        self.granted = False

    def remaining(self) -> float:
        return math.inf if self.outer is None else self.outer.remaining()

    async def attempt(self, n: int) -> T:
        if self.policy._timeout == math.inf:
            result: T = await self.fn()
            return result
        with self._own_limit(n):
            result = await self.fn()
        return result

    @contextlib.contextmanager
    def _own_limit(self, n: int) -> Iterator[None]:
        """Attempt ``n`` under the policy's ``attempt_timeout`` (both paths share it)."""
        scope = DeadlineScope(self.policy._timeout, name=f"{self.name} attempt {n}")
        try:
            with scope:
                yield
        except DeadlineExceeded as exc:
            self._note_own_timeout(scope, exc)
            raise

    def _note_own_timeout(self, scope: DeadlineScope, exc: DeadlineExceeded) -> None:
        # binding() tells this attempt's limit from an enclosing deadline that is
        # enforced here because it was set in another task.
        own = scope.deadline
        if scope.expired and own is not None and own.binding() is own:
            self.timed_out = exc

    def retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):
            return False  # cancellation and interrupts always propagate
        if exc is self.timed_out:
            return True
        if isinstance(exc, DeadlineExceeded) and self.remaining() <= 0:
            return False  # the enclosing deadline fired: there is no time to retry in
        return self.policy._match(exc)

    def _wait(self, state: RetryCallState) -> float:
        return float(self.policy.backoff._wait(state)) if _backoff_enabled else 0.0

    def _stop(self, state: RetryCallState) -> bool:
        # Runs after _wait, so the backoff before the next attempt is known.
        n = state.attempt_number
        exc = state.outcome.exception() if state.outcome is not None else None
        if n >= self.attempts and not self._bounded_by_time(exc):
            return True
        self.last = exc
        self.granted = False
        self.sleep = state.upcoming_sleep
        left = self.remaining()
        # ">=" on the sleep alone: with no backoff and min_attempt=0, nothing fits in 0 s
        # left, and an attempt never starts at or after the deadline.
        if self.sleep >= left or self.sleep + self.policy.min_attempt > left:
            _on_budget_exhausted(self, n, exc)
            return True
        if self.budget is not None:
            if not self.budget.try_acquire():
                _on_budget_refused(self, n, exc)
                return True
            self.granted = True
        return False

    def _bounded_by_time(self, exc: BaseException | None) -> bool:
        # With no deadline there is no time bound, and with the waits turned off (tests)
        # the loop would spin: then ``attempts`` counts these too.
        return (
            self.by_time is not None
            and _backoff_enabled
            and isinstance(exc, Exception)
            and not math.isinf(self.remaining())
            and self.by_time(exc)
        )

    def expired_after_sleep(self, n: int) -> BaseException | None:
        """The failure to raise when the deadline passed during the backoff, else ``None``.

        The check before the backoff cannot see how long the wait really took; this one
        runs right before attempt ``n`` starts.
        """
        if self.last is None or self.remaining() > 0:
            return None
        if self.granted and self.budget is not None:
            self.budget.refund()  # the retry it granted never started
            self.granted = False
        self.sleep = None
        _on_budget_exhausted(self, n - 1, self.last)
        return self.last

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        _on_retry(self, state.attempt_number, exc)

    def _engine(self, kind: type[_R], sleep: Callable[[float], Any]) -> _R:
        """Tenacity's loop with this run's rules; ``sleep`` is the path's own wait."""
        return kind(
            sleep=sleep,
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(self.retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _next(self, state: RetryCallState, replay: list[Exception]) -> int:
        """Before an attempt starts: its number, or the deadline's failure if it passed."""
        n = state.attempt_number
        if not replay:
            late = self.expired_after_sleep(n)
            if late is not None:
                raise late
        return n

    @staticmethod
    def _replay(replay: list[Exception]) -> None:
        # The first attempt already ran (and failed) outside tenacity: it is tenacity's
        # first failure, raised inside its attempt.
        if replay:
            raise replay.pop()

    async def retry_after(self, first: Exception) -> T:
        replay = [first]
        async for attempt in self._engine(AsyncRetrying, _sleep):
            n = self._next(attempt.retry_state, replay)
            with attempt:
                self._replay(replay)
                return await self.attempt(n)
        raise AssertionError("unreachable: with reraise=True tenacity returns or raises")

    def attempt_sync(self, n: int) -> T:
        if self.policy._timeout == math.inf:
            result: T = self.fn()
            return result
        with self._own_limit(n):
            result = self.fn()
        return result

    def retry_after_sync(self, first: Exception) -> T:
        """The blocking twin of :meth:`retry_after`: the same rules, ``time.sleep`` waits."""
        replay = [first]
        for attempt in self._engine(Retrying, time.sleep):
            n = self._next(attempt.retry_state, replay)
            with attempt:
                self._replay(replay)
                return self.attempt_sync(n)
        raise AssertionError("unreachable: with reraise=True tenacity returns or raises")


class _BudgetScope:
    """The retry budget for one run: the enclosing run's, else a fresh one for its nested calls.

    The outermost retry's own retries are bounded by ``attempts``; the calls nested in its
    attempts share the fresh budget, so they cannot multiply. Both paths enter it the same.
    """

    __slots__ = ("budget", "token")

    def __enter__(self) -> RetryBudget | None:
        self.budget = budget_var.get()
        self.token: Any = None
        if self.budget is None:
            self.token = budget_var.set(RetryBudget.default())
        else:
            self.budget.record_call()
        return self.budget

    def __exit__(self, *exc_info: object) -> None:
        if self.token is not None:
            budget_var.reset(self.token)


def _attempts(policy: RetryPolicy) -> int:
    return policy.attempts if policy.attempts is not None else _config.retry_attempts()


def _retrying_after(
    exc: Exception,
    call: _Call[T] | None,
    fn: Callable[[], Any],
    policy: RetryPolicy,
    name: str,
    attempts: int,
    budget: RetryBudget | None,
    by_time: ByTime | None,
) -> _Call[T] | None:
    """The run that goes on after a first attempt failed with ``exc`` (``None``: it ends).

    Both paths share it; the bookkeeping object is made here if success had no need of it.
    """
    if call is None:
        call = _Call(fn, policy, name, attempts, budget, by_time)
    if (attempts == 1 and not call._bounded_by_time(exc)) or not call.retryable(exc):
        return None
    return call


async def _run(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy, name: str, by_time: ByTime | None = None
) -> T:
    attempts = _attempts(policy)
    with _BudgetScope() as budget:
        # The bookkeeping object is made only when needed, to keep success cheap.
        call: _Call[T] | None = None
        try:
            if policy._timeout == math.inf:
                return await fn()
            call = _Call(fn, policy, name, attempts, budget, by_time)
            return await call.attempt(1)
        except Exception as exc:
            retrying = _retrying_after(exc, call, fn, policy, name, attempts, budget, by_time)
            if retrying is None:
                raise
            first = exc
        return await retrying.retry_after(first)


def _run_sync(
    fn: Callable[[], T], policy: RetryPolicy, name: str, by_time: ByTime | None = None
) -> T:
    attempts = _attempts(policy)
    with _BudgetScope() as budget:
        call: _Call[T] | None = None
        try:
            if policy._timeout == math.inf:
                return fn()
            call = _Call(fn, policy, name, attempts, budget, by_time)
            return call.attempt_sync(1)
        except Exception as exc:
            retrying = _retrying_after(exc, call, fn, policy, name, attempts, budget, by_time)
            if retrying is None:
                raise
            first = exc
        return retrying.retry_after_sync(first)


async def run_retrying(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy, name: str, *, by_time: ByTime | None = None
) -> T:
    """The engine behind :func:`retry_call`, for the library's own callers.

    ``by_time`` picks failures that never reached the peer: under a finite deadline they
    are retried (with the policy's backoff, within the retry budget) until the time left
    no longer fits an attempt, however many ``attempts`` says; with no deadline, or with
    the waits turned off (:func:`set_backoff_enabled`), they are counted like any other
    failure.
    """
    return await _run(fn, policy, name, by_time)


def run_retrying_sync(
    fn: Callable[[], T], policy: RetryPolicy, name: str, *, by_time: ByTime | None = None
) -> T:
    """The blocking twin of :func:`run_retrying`: same rules, same budget, ``time.sleep``."""
    return _run_sync(fn, policy, name, by_time)


def as_policy(
    retry: RetryPolicy | int | None, *, on: RetryOn, replace_on: bool = False
) -> RetryPolicy:
    """Turn a ``retry=`` argument (a policy, a number of attempts or ``None``) into a policy.

    ``on`` is what the caller of this function knows to be safe to retry; it replaces the
    policy's default "retry every exception", and with ``replace_on`` any ``on`` given
    (the transports decide what is safe to repeat, the policy only how often and how long).
    Shared by the MCP client and the HTTP transports, so ``retry=`` means one thing.
    """
    if retry is None:
        return RetryPolicy(on=on)
    if isinstance(retry, bool) or not isinstance(retry, (int, RetryPolicy)):
        raise TypeError(
            f"retry must be a hangguard.RetryPolicy, a number of attempts or None, got {retry!r}"
        )
    if isinstance(retry, int):
        return RetryPolicy(attempts=retry, on=on)
    if replace_on or retry.on is Exception:
        return dataclasses.replace(retry, on=on)
    return retry


async def retry_call(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy | None = None, *, name: str | None = None
) -> T:
    """Call ``fn()`` and await it, retrying under ``policy`` (defaults: see :class:`RetryPolicy`).

    ``name`` labels the retries in logs, span events and attempt deadlines (default: the
    function's qualified name). Raises the last real exception when it gives up::

        policy = hangguard.RetryPolicy(on=is_transient, attempt_timeout=5)
        reply = await hangguard.retry_call(lambda: session.call_tool("search"), policy)
    """
    if not callable(fn):
        raise TypeError(f"fn must be a zero-argument coroutine function, got {fn!r}")
    if policy is None:
        policy = _DEFAULT_POLICY
    elif not isinstance(policy, RetryPolicy):
        raise TypeError(f"policy must be a hangguard.RetryPolicy or None, got {policy!r}")
    return await _run(fn, policy, callable_name(fn) if name is None else name)


def retry(
    *,
    attempts: int | None = None,
    on: RetryOn = Exception,
    backoff: Backoff | None = None,
    attempt_timeout: float | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Retry an ``async def`` on failure, within its deadline and the call tree's budget.

    ``on`` selects the failures to retry; an attempt cut off by its own
    ``attempt_timeout`` is retried whatever ``on`` says. Arguments are checked here;
    ``attempts=None`` reads ``HANGGUARD_RETRY_ATTEMPTS`` at each call. See
    :class:`RetryPolicy` for their meaning::

        @hangguard.retry(on=(ConnectionError, TimeoutError), attempt_timeout=10)
        async def fetch(url: str) -> bytes: ...
    """
    policy = RetryPolicy(
        attempts=attempts,
        on=on,
        backoff=_DEFAULT_BACKOFF if backoff is None else backoff,
        attempt_timeout=attempt_timeout,
    )

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"hangguard.retry() decorates an async def, and {callable_name(fn)} is not one "
                "(for blocking code, retry an async def that awaits asyncio.to_thread)"
            )
        name = callable_name(fn)

        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            return await _run(lambda: fn(*args, **kwargs), policy, name)

        return retrying

    return decorate
