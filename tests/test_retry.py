"""Retries: attempts, what is retried, deadlines, the shared budget, events and logs.

Most tests wait zero seconds between attempts (``NO_WAIT`` or ``disable_backoff``), so
they are instant. Stopping before a deadline is tested on :class:`FakeClock`, exactly,
and once on the real clock with a margin of 0.5 s for a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tenacity import RetryError

import hangguard
from hangguard import (
    Backoff,
    ConfigError,
    DeadlineExceeded,
    RetryBudget,
    RetryPolicy,
    current_deadline,
    deadline,
    retry,
    retry_budget,
    retry_call,
)
from hangguard._config import ENV_RETRY_ATTEMPTS
from hangguard._retry_budget import budget_var
from hangguard._semconv import (
    ATTR_EXCEPTION_MESSAGE,
    ATTR_EXCEPTION_TYPE,
    ATTR_RETRY_ATTEMPT,
    ATTR_RETRY_ATTEMPTS,
    ATTR_RETRY_NAME,
    ATTR_RETRY_REMAINING_S,
    ATTR_RETRY_SLEEP_S,
    EVENT_DEADLINE_EXCEEDED,
    EVENT_RETRY,
    EVENT_RETRY_BUDGET_EXHAUSTED,
    EVENT_RETRY_BUDGET_REFUSED,
)
from hangguard.testing import FakeClock, disable_backoff, use_clock
from timing import WIDE_MARGIN

MARGIN = WIDE_MARGIN  # each bounded thing would otherwise hang: see timing.py
NO_WAIT = Backoff(initial=0, jitter=0)


class Flaky:
    """An async callable that fails ``failures`` times with ``exc``, then returns its count.

    Each failure is a new exception object, so a test can tell which one was raised.
    """

    def __init__(self, failures: float = math.inf, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            error = self.exc(f"failure {self.calls}")
            self.raised.append(error)
            raise error
        return self.calls


async def hang() -> None:
    """Wait for something that never happens."""
    await asyncio.Event().wait()


@pytest.fixture
def no_backoff() -> Iterator[None]:
    with disable_backoff():
        yield


def traced_span(spans: InMemorySpanExporter, name: str = "outer") -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


tracer = trace.get_tracer("tests.retry")


# --- attempts ----------------------------------------------------------------------------


async def test_success_on_first_attempt_calls_once(spans: InMemorySpanExporter) -> None:
    fn = Flaky(failures=0)
    with tracer.start_as_current_span("outer"):
        assert await retry_call(fn) == 1
    assert fn.calls == 1
    assert traced_span(spans).events == ()


async def test_retries_then_succeeds(spans: InMemorySpanExporter) -> None:
    fn = Flaky(failures=2)
    with tracer.start_as_current_span("outer"):
        result = await retry_call(fn, RetryPolicy(attempts=3, backoff=NO_WAIT), name="fetch")
    assert result == 3
    retries = events(traced_span(spans), EVENT_RETRY)
    assert retries == [
        {
            ATTR_RETRY_NAME: "fetch",
            ATTR_RETRY_ATTEMPT: n,
            ATTR_RETRY_ATTEMPTS: 3,
            ATTR_RETRY_SLEEP_S: 0.0,
            ATTR_EXCEPTION_TYPE: "ConnectionError",
            ATTR_EXCEPTION_MESSAGE: f"failure {n}",
        }
        for n in (1, 2)
    ]


async def test_attempts_exhausted_raise_the_last_real_exception(no_backoff: None) -> None:
    fn = Flaky()
    with pytest.raises(ConnectionError) as info:
        await retry_call(fn, RetryPolicy(attempts=4))
    assert fn.calls == 4
    assert info.value is fn.raised[-1]
    assert not isinstance(info.value, RetryError)
    # Nothing of the retry machinery is chained onto the exception.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_one_attempt_means_no_retry() -> None:
    fn = Flaky()
    with pytest.raises(ConnectionError):
        await retry_call(fn, RetryPolicy(attempts=1))
    assert fn.calls == 1


async def test_non_matching_exception_propagates_at_once(no_backoff: None) -> None:
    fn = Flaky(exc=KeyError)
    with pytest.raises(KeyError):
        await retry_call(fn, RetryPolicy(attempts=5, on=ConnectionError))
    assert fn.calls == 1


async def test_non_matching_exception_after_a_retry_propagates(no_backoff: None) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError() if calls == 1 else KeyError("bug")

    with pytest.raises(KeyError):
        await retry_call(fn, RetryPolicy(attempts=5, on=(ConnectionError, TimeoutError)))
    assert calls == 2


async def test_predicate_decides_what_is_retried(no_backoff: None) -> None:
    def transient(exc: Exception) -> bool:
        return "transient" in str(exc)

    calls = 0

    @retry(attempts=5, on=transient)
    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient glitch")
        if calls == 3:
            raise RuntimeError("permanent")
        return "unreachable"

    with pytest.raises(RuntimeError, match="permanent"):
        await fn()
    assert calls == 3


# --- cancellation ------------------------------------------------------------------------


async def test_cancelled_error_raised_by_the_function_is_never_retried(no_backoff: None) -> None:
    fn = Flaky(exc=asyncio.CancelledError)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await retry_call(fn, RetryPolicy(attempts=5))
    assert fn.calls == 1


async def test_a_predicate_cannot_make_cancellation_retried(no_backoff: None) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError() if calls == 1 else asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        await retry_call(fn, RetryPolicy(attempts=5, on=lambda exc: True))
    assert calls == 2


@pytest.mark.parametrize("during", ["first attempt", "a retry"])
async def test_cancelling_the_caller_propagates(during: str) -> None:
    started = asyncio.Event()
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        if during == "a retry" and calls == 1:
            raise ConnectionError()
        started.set()
        await hang()

    policy = RetryPolicy(attempts=5, backoff=NO_WAIT, attempt_timeout=60)
    task = asyncio.create_task(retry_call(fn, policy))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == (1 if during == "first attempt" else 2)


async def test_cancelling_during_backoff_propagates() -> None:
    failed = asyncio.Event()
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        failed.set()
        raise ConnectionError()

    task = asyncio.create_task(retry_call(fn, RetryPolicy(backoff=Backoff(initial=60))))
    await failed.wait()  # the task went on, without awaiting, into its 60 s backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


# --- deadlines ---------------------------------------------------------------------------


async def test_attempt_timeout_is_retried_and_each_attempt_has_its_own_deadline(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[str | None] = []

    @retry(attempts=3, backoff=NO_WAIT, attempt_timeout=0.05)
    async def slow_then_fast() -> str:
        d = current_deadline()
        seen.append(d.name if d is not None else None)
        if len(seen) == 1:
            await hang()
        return "ok"

    started = time.monotonic()
    with tracer.start_as_current_span("outer"):
        assert await slow_then_fast() == "ok"
    assert time.monotonic() - started < 0.05 + MARGIN
    name = slow_then_fast.__qualname__
    assert seen == [f"{name} attempt 1", f"{name} attempt 2"]
    (event,) = events(traced_span(spans), EVENT_RETRY)
    assert event[ATTR_EXCEPTION_TYPE] == "hangguard.DeadlineExceeded"


async def test_attempt_timeout_counts_even_when_on_does_not_match(no_backoff: None) -> None:
    calls = 0

    @retry(attempts=2, on=KeyError, attempt_timeout=0.05)
    async def fn() -> None:
        nonlocal calls
        calls += 1
        await hang()

    with pytest.raises(DeadlineExceeded) as info:
        await fn()
    assert calls == 2
    assert info.value.deadline_name == f"{fn.__qualname__} attempt 2"


async def test_timeout_raised_inside_the_function_follows_on(no_backoff: None) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        async with deadline(0.01, name="inner call"):
            await hang()

    with pytest.raises(DeadlineExceeded):
        await retry_call(fn, RetryPolicy(attempts=3, on=TimeoutError))
    assert calls == 3
    calls = 0
    with pytest.raises(DeadlineExceeded):
        await retry_call(fn, RetryPolicy(attempts=3, on=ConnectionError))
    assert calls == 1


async def test_enclosing_deadline_propagates_without_retry(
    spans: InMemorySpanExporter, no_backoff: None
) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        await hang()

    started = time.monotonic()
    with tracer.start_as_current_span("outer"), pytest.raises(DeadlineExceeded) as info:
        async with deadline(0.05, name="request"):
            await retry_call(fn, RetryPolicy(attempts=5, attempt_timeout=30))
    assert info.value.deadline_name == "request"
    assert calls == 1
    assert [e.name for e in traced_span(spans).events] == [EVENT_DEADLINE_EXCEEDED]
    assert time.monotonic() - started < 0.05 + MARGIN


async def test_enclosing_deadline_set_in_the_parent_task_propagates(
    spans: InMemorySpanExporter, no_backoff: None
) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        await hang()

    with tracer.start_as_current_span("outer"):
        async with deadline(0.05, name="request"):
            # The task inherits the deadline; only its attempt's scope enforces it, since
            # the parent leaves its scope without waiting for the task.
            task = asyncio.create_task(retry_call(fn, RetryPolicy(attempts=5, attempt_timeout=30)))
        with pytest.raises(DeadlineExceeded) as info:
            await task
    assert info.value.deadline_name == "request"
    assert calls == 1
    # Propagated as it came: neither a retry nor a "budget exhausted" of its own.
    assert [e.name for e in traced_span(spans).events] == [EVENT_DEADLINE_EXCEEDED]


async def test_stops_when_backoff_no_longer_fits_the_deadline(
    spans: InMemorySpanExporter,
) -> None:
    clock = FakeClock()
    with use_clock(clock):
        fn_calls = 0

        async def fn() -> None:
            nonlocal fn_calls
            fn_calls += 1
            clock.advance(0.6)  # the attempt "took" 0.6 s of a 1 s budget
            raise ConnectionError("down")

        policy = RetryPolicy(attempts=5, backoff=Backoff(initial=0.5, jitter=0))
        with tracer.start_as_current_span("outer"), pytest.raises(ConnectionError):
            async with deadline(1.0, name="request"):
                await retry_call(fn, policy, name="fetch")
    # 0.5 s of backoff + 0.05 s of min_attempt did not fit in the 0.4 s left.
    assert fn_calls == 1
    span = traced_span(spans)
    assert events(span, EVENT_RETRY) == []
    (event,) = events(span, EVENT_RETRY_BUDGET_EXHAUSTED)
    assert event[ATTR_RETRY_NAME] == "fetch"
    assert event[ATTR_RETRY_ATTEMPT] == 1
    assert event[ATTR_RETRY_SLEEP_S] == pytest.approx(0.5)
    assert event[ATTR_RETRY_REMAINING_S] == pytest.approx(0.4)
    assert event[ATTR_EXCEPTION_TYPE] == "ConnectionError"


async def test_retries_while_they_fit_then_stops(spans: InMemorySpanExporter) -> None:
    clock = FakeClock()
    with use_clock(clock):

        async def fn() -> None:
            clock.advance(0.1)
            raise ConnectionError()

        policy = RetryPolicy(
            attempts=50, backoff=Backoff(initial=0.001, multiplier=1, jitter=0), min_attempt=0.25
        )
        with tracer.start_as_current_span("outer"), pytest.raises(ConnectionError):
            async with deadline(1.0):
                await retry_call(fn, policy)
    # Each attempt takes 0.1 s of the fake clock. A retry needs 0.001 s of backoff plus
    # 0.25 s for the attempt: it fits after attempts 1..7 (0.3 s left), not after 8.
    span = traced_span(spans)
    assert len(events(span, EVENT_RETRY)) == 7
    (exhausted,) = events(span, EVENT_RETRY_BUDGET_EXHAUSTED)
    assert exhausted[ATTR_RETRY_ATTEMPT] == 8
    assert exhausted[ATTR_RETRY_REMAINING_S] == pytest.approx(0.2)


@pytest.mark.slow
async def test_never_sleeps_past_a_real_deadline(spans: InMemorySpanExporter) -> None:
    fn = Flaky(exc=ValueError)
    policy = RetryPolicy(
        attempts=1000, backoff=Backoff(initial=0.05, multiplier=1, jitter=0), min_attempt=0.2
    )
    started = time.monotonic()
    with tracer.start_as_current_span("outer"), pytest.raises(ValueError) as info:
        async with deadline(0.6, name="request"):
            await retry_call(fn, policy)
    # The last real failure, not the deadline: retrying stopped while 0.25 s were left.
    assert info.value is fn.raised[-1]
    assert fn.calls >= 2
    assert time.monotonic() - started < 0.6 + MARGIN
    assert len(events(traced_span(spans), EVENT_RETRY_BUDGET_EXHAUSTED)) == 1


# --- the retry budget --------------------------------------------------------------------


async def test_budget_refuses_nested_retries(spans: InMemorySpanExporter, no_backoff: None) -> None:
    inner_fn = Flaky()
    outer_calls = 0

    @retry(attempts=3)
    async def inner() -> int:
        return await inner_fn()

    @retry(attempts=3)
    async def outer() -> int:
        nonlocal outer_calls
        outer_calls += 1
        return await inner()

    with (
        tracer.start_as_current_span("outer"),
        pytest.raises(ConnectionError),
        retry_budget(ratio=0, floor=1) as budget,
    ):
        await outer()
    # One retry in the whole tree: the inner call got it, then both were refused.
    assert (outer_calls, inner_fn.calls) == (1, 2)
    assert (budget.calls, budget.retries, budget.allowed) == (2, 1, 1)
    refused = events(traced_span(spans), EVENT_RETRY_BUDGET_REFUSED)
    assert [e[ATTR_RETRY_NAME] for e in refused] == [inner.__qualname__, outer.__qualname__]


async def test_outermost_retry_limits_nested_ones_by_default(no_backoff: None) -> None:
    inner_fn = Flaky()

    @retry(attempts=3)
    async def inner() -> int:
        return await inner_fn()

    outer_calls = 0

    @retry(attempts=3)
    async def outer() -> int:
        nonlocal outer_calls
        outer_calls += 1
        return await inner()

    with pytest.raises(ConnectionError):
        await outer()
    # The outer call makes its 3 attempts. Unlimited, the inner ones would make 9; the
    # implicit budget (3 + 0.2 per inner call) grants 3 inner retries: 3 + 2 + 1.
    assert outer_calls == 3
    assert inner_fn.calls == 6
    assert budget_var.get() is None


async def test_budget_is_shared_by_tasks_started_inside(no_backoff: None) -> None:
    fns = [Flaky() for _ in range(4)]
    async with retry_budget(ratio=0.5, floor=0) as budget:
        results = await asyncio.gather(
            *(retry_call(fn, RetryPolicy(attempts=5)) for fn in fns), return_exceptions=True
        )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert budget.calls == 4
    # 0.5 retry per call: 2 retries among the 4 calls.
    assert sum(fn.calls for fn in fns) == 4 + 2


async def test_budget_allows_floor_plus_ratio_of_calls() -> None:
    budget = RetryBudget(ratio=0.2, floor=1)
    assert budget.try_acquire()
    assert not budget.try_acquire()
    for _ in range(5):
        budget.record_call()
    assert budget.allowed == pytest.approx(2.0)
    assert budget.try_acquire()  # 0.2 * 5 is one whole retry, despite float rounding
    assert not budget.try_acquire()
    assert budget.retries == 2
    assert "retries=2" in repr(budget)


def test_budget_scope_restores_the_previous_budget() -> None:
    assert budget_var.get() is None
    with retry_budget() as outer:
        with retry_budget() as inner:
            assert budget_var.get() is inner
            with pytest.raises(RuntimeError, match="twice"), inner:
                pass
        assert budget_var.get() is outer
    assert budget_var.get() is None
    assert RetryBudget.default().allowed == RetryBudget().allowed


# --- backoff -----------------------------------------------------------------------------


async def test_backoff_grows_exponentially_up_to_maximum(spans: InMemorySpanExporter) -> None:
    backoff = Backoff(initial=0.001, multiplier=2, maximum=0.004, jitter=0)
    with tracer.start_as_current_span("outer"), pytest.raises(ConnectionError):
        await retry_call(Flaky(), RetryPolicy(attempts=5, backoff=backoff))
    sleeps = [e[ATTR_RETRY_SLEEP_S] for e in events(traced_span(spans), EVENT_RETRY)]
    assert sleeps == pytest.approx([0.001, 0.002, 0.004, 0.004])


async def test_backoff_jitter_is_bounded(spans: InMemorySpanExporter) -> None:
    backoff = Backoff(initial=0.001, multiplier=1, jitter=0.002)
    with tracer.start_as_current_span("outer"), pytest.raises(ConnectionError):
        await retry_call(Flaky(), RetryPolicy(attempts=10, backoff=backoff))
    sleeps = [e[ATTR_RETRY_SLEEP_S] for e in events(traced_span(spans), EVENT_RETRY)]
    assert len(sleeps) == 9
    assert all(0.001 <= s <= 0.003 for s in sleeps)


async def test_disable_backoff_as_context_manager_restores(spans: InMemorySpanExporter) -> None:
    slow = RetryPolicy(attempts=2, backoff=Backoff(initial=0.002, jitter=0))
    with tracer.start_as_current_span("outer"):
        with disable_backoff():
            with disable_backoff():
                pass
            # Still off after the inner block: it restores what it found.
            with pytest.raises(ConnectionError):
                await retry_call(Flaky(), slow)
        with pytest.raises(ConnectionError):
            await retry_call(Flaky(), slow)
    sleeps = [e[ATTR_RETRY_SLEEP_S] for e in events(traced_span(spans), EVENT_RETRY)]
    assert sleeps == [0.0, 0.002]


async def test_disable_backoff_as_a_function_stays_in_force() -> None:
    restore = disable_backoff()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await retry_call(Flaky(), RetryPolicy(attempts=2, backoff=Backoff(initial=60)))
        assert time.monotonic() - started < MARGIN
    finally:
        restore.__exit__(None, None, None)


# --- logging -----------------------------------------------------------------------------


async def test_each_retry_is_logged_once_without_traceback(
    caplog: pytest.LogCaptureFixture, no_backoff: None
) -> None:
    with caplog.at_level(logging.INFO, logger="hangguard"), pytest.raises(ConnectionError):
        await retry_call(Flaky(), RetryPolicy(attempts=3), name="fetch")
    records = [r for r in caplog.records if r.name == "hangguard"]
    # Two retries; the final failure is the caller's to log.
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert "fetch" in records[0].getMessage()
    assert "attempt 1 of 3" in records[0].getMessage()
    assert "ConnectionError: failure 1" in records[0].getMessage()


# --- the decorator -----------------------------------------------------------------------


def test_decorator_keeps_the_signature() -> None:
    async def search(query: str, *, limit: int = 10) -> list[str]:
        """Search for things."""
        return [query] * limit

    wrapped = retry()(search)
    assert inspect.signature(wrapped) == inspect.signature(search)
    assert wrapped.__name__ == "search"
    assert wrapped.__doc__ == "Search for things."
    assert inspect.iscoroutinefunction(wrapped)


async def test_decorator_passes_arguments_on_every_attempt(no_backoff: None) -> None:
    seen: list[tuple[str, int]] = []

    @retry(attempts=2)
    async def search(query: str, *, limit: int = 10) -> int:
        seen.append((query, limit))
        if len(seen) == 1:
            raise ConnectionError()
        return limit

    assert await search("q", limit=3) == 3
    assert seen == [("q", 3), ("q", 3)]


def test_decorating_a_plain_function_is_a_type_error() -> None:
    def not_async() -> int:
        return 1

    with pytest.raises(TypeError, match=r"async def.*not_async"):
        retry()(not_async)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"attempt_timeout": -1}, ValueError, "attempt_timeout"),
        ({"attempt_timeout": 0}, ValueError, "attempt_timeout"),
        ({"attempt_timeout": math.nan}, ValueError, "attempt_timeout"),
        ({"on": asyncio.CancelledError}, TypeError, "on"),
        ({"on": KeyboardInterrupt}, TypeError, "on"),
        ({"on": ()}, TypeError, "on"),
        ({"on": (ValueError, "x")}, TypeError, "on"),
        ({"backoff": 1.0}, TypeError, "backoff"),
    ],
)
def test_bad_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=rf"\b{param}\b"):
        retry(**kwargs)


@pytest.mark.parametrize(
    ("make", "error", "param"),
    [
        (lambda: Backoff(initial=-1), ValueError, "Backoff.initial"),
        (lambda: Backoff(jitter=math.inf), ValueError, "Backoff.jitter"),
        (lambda: Backoff(multiplier=0.5), ValueError, "Backoff.multiplier"),
        (lambda: Backoff(maximum=math.nan), ValueError, "Backoff.maximum"),
        (lambda: RetryPolicy(min_attempt=-0.1), ValueError, "min_attempt"),
        (lambda: retry_budget(ratio=-1), ValueError, "ratio"),
        (lambda: retry_budget(ratio=math.nan), ValueError, "ratio"),
        (lambda: retry_budget(floor=-1), ValueError, "floor"),
        (lambda: retry_budget(floor=1.5), TypeError, "floor"),  # type: ignore[arg-type]
    ],
)
def test_bad_values_name_the_field(make: Any, error: type[Exception], param: str) -> None:
    with pytest.raises(error, match=param):
        make()


async def test_retry_call_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="fn"):
        await retry_call(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy"):
        await retry_call(Flaky(), {"attempts": 3})  # type: ignore[arg-type]


async def test_retry_call_names_retries_after_the_function(spans: InMemorySpanExporter) -> None:
    fn = Flaky(failures=1)

    async def fetch_page() -> int:
        return await fn()

    with tracer.start_as_current_span("outer"):
        await retry_call(fetch_page, RetryPolicy(backoff=NO_WAIT))
    (event,) = events(traced_span(spans), EVENT_RETRY)
    assert event[ATTR_RETRY_NAME] == fetch_page.__qualname__


# --- configuration -----------------------------------------------------------------------


async def test_env_sets_the_default_attempts(
    monkeypatch: pytest.MonkeyPatch, no_backoff: None
) -> None:
    monkeypatch.setenv(ENV_RETRY_ATTEMPTS, "5")
    fn = Flaky()
    with pytest.raises(ConnectionError):
        await retry()(fn.__call__)()
    assert fn.calls == 5


async def test_explicit_attempts_beat_the_env(
    monkeypatch: pytest.MonkeyPatch, no_backoff: None
) -> None:
    monkeypatch.setenv(ENV_RETRY_ATTEMPTS, "5")
    fn = Flaky()
    with pytest.raises(ConnectionError):
        await retry_call(fn, RetryPolicy(attempts=2))
    assert fn.calls == 2


async def test_default_attempts_without_env(
    monkeypatch: pytest.MonkeyPatch, no_backoff: None
) -> None:
    monkeypatch.delenv(ENV_RETRY_ATTEMPTS, raising=False)
    fn = Flaky()
    with pytest.raises(ConnectionError):
        await retry_call(fn)
    assert fn.calls == 3


async def test_bad_env_value_fails_the_call_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_RETRY_ATTEMPTS, "zero")
    fn = Flaky(failures=0)
    decorated = retry()(fn.__call__)  # decorating reads nothing
    with pytest.raises(ConfigError, match=ENV_RETRY_ATTEMPTS) as info:
        await decorated()
    assert info.value.name == ENV_RETRY_ATTEMPTS
    assert fn.calls == 0


def test_public_names_are_exported() -> None:
    for name in ("Backoff", "RetryBudget", "RetryOn", "RetryPolicy", "retry", "retry_budget"):
        assert name in hangguard.__all__
    assert hangguard.retry_call is retry_call
    assert RetryPolicy.__module__ == "hangguard"


# --- no attempt starts at or after the deadline -------------------------------------------


async def test_no_attempt_starts_at_or_after_the_deadline_with_zero_backoff_and_min_attempt() -> (
    None
):
    # A child task under a 50 s deadline, retrying with no backoff and min_attempt=0:
    # "0 s of backoff + 0 s of attempt fit in the 0 s left" must not start an attempt.
    # 50 s, not 50 ms: the scope's loop timer runs on real time, and five attempts on a
    # loaded machine took longer than 50 ms of it.
    clock = FakeClock()
    starts: list[float] = []
    with use_clock(clock):

        async def fn() -> None:
            starts.append(clock())
            clock.advance(10)
            raise ConnectionError("down")

        policy = RetryPolicy(
            attempts=500, backoff=Backoff(initial=0, maximum=0, jitter=0), min_attempt=0
        )
        async with deadline(50, name="request") as scope:
            child = asyncio.create_task(retry_call(fn, policy, name="fetch"))
            with pytest.raises(ConnectionError):
                await child
        assert scope.deadline is not None
        expires_at = scope.deadline.expires_at
    assert starts, "the first attempt runs"
    assert all(start < expires_at for start in starts), (starts, expires_at)
    assert len(starts) == 5


async def test_no_attempt_starts_when_the_backoff_overran_the_deadline(
    spans: InMemorySpanExporter,
) -> None:
    # The check before the backoff passed; the deadline went by during the wait (here
    # the fake clock jumps while the retry sleeps). The next attempt must not start, and
    # the failure of the last attempt that ran is what the caller gets.
    clock = FakeClock()
    flaky = Flaky()
    with use_clock(clock):

        async def fn() -> int:
            asyncio.get_running_loop().call_soon(clock.advance, 1.0)
            return await flaky()

        policy = RetryPolicy(attempts=5, backoff=NO_WAIT, min_attempt=0)
        with tracer.start_as_current_span("outer"), pytest.raises(ConnectionError) as info:
            async with deadline(0.5, name="request"):
                await retry_call(fn, policy, name="fetch")
    assert flaky.calls == 1
    assert info.value is flaky.raised[0]
    (event,) = events(traced_span(spans), EVENT_RETRY_BUDGET_EXHAUSTED)
    assert event[ATTR_RETRY_REMAINING_S] == 0


async def test_a_retry_granted_but_not_started_is_given_back_to_the_budget() -> None:
    clock = FakeClock()
    with use_clock(clock), hangguard.retry_budget(ratio=0, floor=3) as budget:

        async def fn() -> None:
            asyncio.get_running_loop().call_soon(clock.advance, 1.0)
            raise ConnectionError("down")

        policy = RetryPolicy(attempts=5, backoff=NO_WAIT, min_attempt=0)
        with pytest.raises(ConnectionError):
            async with deadline(0.5):
                await retry_call(fn, policy)
    assert budget.retries == 0


def test_a_policy_copied_for_a_predicate_equals_one_made_with_it() -> None:
    # The HTTP transports copy the caller's checked policy per request (no re-check).
    def on(exc: Exception) -> bool:
        return isinstance(exc, KeyError)

    base = hangguard.RetryPolicy(
        attempts=4,
        backoff=hangguard.Backoff(initial=0.2),
        attempt_timeout=3,
        min_attempt=0.1,
    )
    made = hangguard.RetryPolicy(
        attempts=4,
        on=on,
        backoff=hangguard.Backoff(initial=0.2),
        attempt_timeout=3,
        min_attempt=0.1,
    )
    copied = base._retrying(on)
    assert copied == made
    assert copied._timeout == made._timeout == 3
    assert copied._match(KeyError()) and not copied._match(ValueError())
