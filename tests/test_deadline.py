"""Deadlines: arithmetic on a fake clock, enforcement in tasks on the real one.

The arithmetic tests run outside any event loop or with :class:`FakeClock`, so they are
exact. Enforcement needs the loop's real timers: those tests use budgets of a few tens of
milliseconds and only assert that the work ended within budget + 0.5 s, a margin wide
enough for a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import DeadlineExceeded, current_deadline, deadline, remaining, split_budget
from hangguard._deadline import check_timeout, get_clock, now, set_clock
from hangguard._semconv import ATTR_DEADLINE_BUDGET_S, ATTR_DEADLINE_NAME, EVENT_DEADLINE_EXCEEDED
from hangguard.testing import FakeClock, use_clock
from timing import WIDE_MARGIN

MARGIN = WIDE_MARGIN  # each bounded thing would otherwise hang: see timing.py
# How long past a budget a test waits to show that no stray timer fires.
PAST = 0.5


async def hang() -> None:
    """Wait for something that never happens."""
    await asyncio.Event().wait()


# --- reading deadlines (no enforcement involved) -----------------------------------------


def test_no_deadline() -> None:
    assert current_deadline() is None
    assert remaining() == math.inf


def test_remaining_follows_the_fake_clock() -> None:
    with use_clock(FakeClock()) as clock, deadline(10, name="d") as scope:
        assert remaining() == 10
        assert scope.remaining() == 10
        assert isinstance(clock, FakeClock)
        clock.advance(4)
        assert remaining() == 6
        clock.advance(100)
        assert remaining() == 0  # never negative
    assert remaining() == math.inf


def test_use_clock_restores_the_previous_clock() -> None:
    before = get_clock()
    fake = FakeClock(start=5.0)
    with use_clock(fake):
        assert now() == 5.0
    assert get_clock() is before
    previous = set_clock(fake)
    try:
        assert previous is before
        assert now() == 5.0
    finally:
        set_clock(previous)


def test_fake_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="seconds"):
        FakeClock().advance(-1)


def test_current_deadline_describes_the_scope() -> None:
    with use_clock(FakeClock(start=100.0)), deadline(7, name="fetch"):
        d = current_deadline()
        assert d is not None
        assert d.name == "fetch"
        assert d.budget == 7
        assert d.started_at == 100.0
        assert d.expires_at == 107.0
        assert d.parent is None
    assert current_deadline() is None


def test_nested_deadline_takes_the_earlier() -> None:
    with use_clock(FakeClock()) as clock, deadline(10, name="outer"):
        outer = current_deadline()
        assert outer is not None
        with deadline(20, name="inner-longer"):
            inner = current_deadline()
            assert inner is not None
            assert inner.parent is outer
            assert inner.expires_at == outer.expires_at
            assert remaining() == 10
            assert inner.binding() is outer
        with deadline(3, name="inner-shorter"):
            inner = current_deadline()
            assert inner is not None
            assert remaining() == 3
            assert inner.binding() is inner
            assert isinstance(clock, FakeClock)
            clock.advance(1)
            assert remaining() == 2
        # Leaving the inner scope restores the outer one.
        assert current_deadline() is outer
        assert remaining() == 9


def test_inner_deadline_started_later_can_still_be_bound_by_outer() -> None:
    with use_clock(FakeClock()) as clock, deadline(10, name="outer"):
        assert isinstance(clock, FakeClock)
        clock.advance(8)
        # Asks for 5 s, but only 2 s are left of the outer budget.
        with deadline(5, name="inner"):
            d = current_deadline()
            assert d is not None
            assert remaining() == 2
            assert d.binding().name == "outer"


def test_none_means_no_limit_of_its_own() -> None:
    with use_clock(FakeClock()):
        with deadline(None) as scope:
            assert remaining() == math.inf
            assert scope.deadline is None
        with deadline(5, name="outer"):
            outer = current_deadline()
            with deadline(None) as scope:
                # The enclosing deadline stays in force.
                assert current_deadline() is outer
                assert scope.deadline is outer
                assert remaining() == 5
        with deadline(math.inf):
            assert remaining() == math.inf


def test_outside_a_loop_readable_not_enforced() -> None:
    with use_clock(FakeClock()) as clock, deadline(1, name="sync") as scope:
        assert isinstance(clock, FakeClock)
        clock.advance(5)
        assert remaining() == 0
    # Nothing was raised: with no running task there is nothing to cancel.
    assert not scope.expired


def test_scope_cannot_be_entered_twice() -> None:
    scope = deadline(1)
    with scope, pytest.raises(RuntimeError, match="twice"), scope:
        pass


# --- split_budget ------------------------------------------------------------------------


def test_split_budget_without_a_deadline() -> None:
    assert split_budget() == math.inf
    assert split_budget(3) == 3
    assert split_budget(3, fraction=0.5, reserve=1) == 3


def test_split_budget_arithmetic() -> None:
    with use_clock(FakeClock()) as clock, deadline(10):
        assert split_budget() == 10
        assert split_budget(30) == 10  # at most what is left
        assert split_budget(4) == 4  # at most its own timeout
        assert split_budget(fraction=0.5) == 5
        assert split_budget(reserve=1) == 9
        assert split_budget(fraction=0.5, reserve=8) == 2  # the smaller of the two
        assert split_budget(30, fraction=0.25) == 2.5
        assert isinstance(clock, FakeClock)
        clock.advance(9.5)
        assert split_budget(reserve=1) == 0  # never below zero
        assert split_budget(fraction=0.5) == 0.25


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, -1, -0.001])
def test_deadline_rejects_bad_seconds_naming_the_parameter(bad: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        deadline(bad)


@pytest.mark.parametrize("bad", ["5", True, [1]])
def test_deadline_rejects_non_numbers_naming_the_parameter(bad: object) -> None:
    with pytest.raises(TypeError, match="seconds"):
        deadline(bad)  # type: ignore[arg-type]


def test_split_budget_validation_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="timeout"):
        split_budget(math.nan)
    with pytest.raises(ValueError, match="timeout"):
        split_budget(-1)
    with pytest.raises(ValueError, match="reserve"):
        split_budget(reserve=-1)
    with pytest.raises(ValueError, match="reserve"):
        split_budget(reserve=math.nan)
    for fraction in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError, match="fraction"):
            split_budget(fraction=fraction)


def test_check_timeout() -> None:
    assert check_timeout(None, "t") == math.inf
    assert check_timeout(None, "t", none_means=2.0) == 2.0
    assert check_timeout(0, "t") == 0.0
    assert check_timeout(1.5, "t") == 1.5
    with pytest.raises(ValueError, match="my_param"):
        check_timeout(math.nan, "my_param")
    with pytest.raises(ValueError, match="my_param"):
        check_timeout(-3, "my_param")
    with pytest.raises(TypeError, match="my_param"):
        check_timeout("3", "my_param")  # type: ignore[arg-type]


# --- the exception -----------------------------------------------------------------------


def test_deadline_exceeded_is_a_timeout_error() -> None:
    assert issubclass(DeadlineExceeded, TimeoutError)
    assert issubclass(DeadlineExceeded, asyncio.TimeoutError)
    assert issubclass(DeadlineExceeded, hangguard.HangguardError)


# --- enforcement in tasks (real clock, wide margins) -------------------------------------


async def test_deadline_fires_in_a_task() -> None:
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        async with deadline(0.05, name="fetch") as scope:
            await hang()
    assert time.monotonic() - start < 0.05 + MARGIN
    assert scope.expired
    assert info.value.deadline_name == "fetch"
    assert info.value.budget == 0.05
    assert isinstance(info.value.__cause__, asyncio.CancelledError)


async def test_caught_as_asyncio_timeout_error() -> None:
    with pytest.raises(asyncio.TimeoutError):
        async with deadline(0.01):
            await hang()


async def test_zero_budget_fires_at_the_first_await() -> None:
    with pytest.raises(DeadlineExceeded):
        async with deadline(0, name="zero"):
            await asyncio.sleep(0)


async def test_task_is_usable_after_its_deadline_fired() -> None:
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.01):
            await hang()
    task = asyncio.current_task()
    assert task is not None
    # The cancellation was consumed, so the task can go on awaiting.
    assert task.cancelling() == 0
    await asyncio.sleep(0)


async def test_body_that_finishes_in_time_is_untouched() -> None:
    async with deadline(10, name="roomy") as scope:
        await asyncio.sleep(0)
        result = 42
    assert result == 42
    assert not scope.expired


async def test_sync_with_is_enforced_inside_a_task() -> None:
    with pytest.raises(DeadlineExceeded) as info, deadline(0.05, name="sync-in-task"):
        await hang()
    assert info.value.deadline_name == "sync-in-task"


async def test_inner_deadline_fires_and_names_itself() -> None:
    start = time.monotonic()
    async with deadline(30, name="outer") as outer:
        with pytest.raises(DeadlineExceeded) as info:
            async with deadline(0.05, name="inner"):
                await hang()
        # The outer scope carries on after the inner one fired.
        await asyncio.sleep(0)
    assert time.monotonic() - start < 0.05 + MARGIN
    assert info.value.deadline_name == "inner"
    assert not outer.expired


async def test_outer_deadline_fires_through_a_longer_inner_one() -> None:
    outer = deadline(0.05, name="outer")
    inner = deadline(30, name="inner")

    async def nested() -> None:
        async with outer, inner:
            await hang()

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        await nested()
    assert time.monotonic() - start < 0.05 + MARGIN
    assert info.value.deadline_name == "outer"
    assert info.value.budget == 0.05
    assert outer.expired
    assert not inner.expired


async def test_parent_deadline_is_enforced_in_a_child_task_with_its_own_scope() -> None:
    child_entered = asyncio.Event()

    async def child() -> None:
        # The child asks for far more time than its parent has; the parent's deadline
        # binds, and the child stops on its own, naming the parent's deadline.
        async with deadline(30, name="child"):
            child_entered.set()
            await hang()

    tasks: list[asyncio.Task[None]] = []

    async def parent() -> None:
        async with deadline(0.05, name="parent"):
            tasks.append(asyncio.create_task(child()))
            await child_entered.wait()
            # shield: the child must stop by itself, not because its awaiter was cancelled.
            await asyncio.shield(tasks[0])

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as parent_info:
        await parent()
    (task,) = tasks
    with pytest.raises(DeadlineExceeded) as child_info:
        await task
    assert time.monotonic() - start < 0.05 + MARGIN
    assert parent_info.value.deadline_name == "parent"
    assert child_info.value.deadline_name == "parent"


async def test_child_task_inherits_the_deadline_for_reading() -> None:
    seen: list[float] = []

    async def child() -> None:
        d = current_deadline()
        assert d is not None
        assert d.name == "parent"
        seen.append(remaining())

    async with deadline(30, name="parent"):
        await asyncio.create_task(child())
    assert 0 < seen[0] <= 30


async def test_child_awaited_by_the_parent_is_cancelled_with_it() -> None:
    child_entered = asyncio.Event()

    async def child() -> None:
        child_entered.set()
        await hang()

    tasks: list[asyncio.Task[None]] = []

    async def parent() -> None:
        async with deadline(0.05, name="parent"):
            tasks.append(asyncio.create_task(child()))
            await child_entered.wait()
            await tasks[0]

    with pytest.raises(DeadlineExceeded) as info:
        await parent()
    (task,) = tasks
    assert info.value.deadline_name == "parent"
    assert task.cancelled()


async def test_cancellation_from_outside_is_not_a_deadline() -> None:
    entered = asyncio.Event()

    async def worker() -> None:
        async with deadline(30, name="roomy"):
            entered.set()
            await hang()

    task = asyncio.create_task(worker())
    await entered.wait()
    task.cancel("shutting down")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_outside_cancel_wins_over_a_deadline_firing_at_the_same_time() -> None:
    entered = asyncio.Event()

    async def worker() -> None:
        # A zero budget arms its timer with call_soon, so it fires before the test task
        # wakes up to cancel: both cancellations land, and the outside one must win.
        async with deadline(0, name="zero"):
            entered.set()
            await hang()

    task = asyncio.create_task(worker())
    await entered.wait()
    task.cancel("shutting down")
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadline_exceeded_is_recorded_on_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("work"), pytest.raises(DeadlineExceeded):
        async with deadline(0.01, name="fetch"):
            await hang()
    (span,) = spans.get_finished_spans()
    events = [e for e in span.events if e.name == EVENT_DEADLINE_EXCEEDED]
    assert len(events) == 1
    assert events[0].attributes is not None
    assert events[0].attributes[ATTR_DEADLINE_NAME] == "fetch"
    assert events[0].attributes[ATTR_DEADLINE_BUDGET_S] == 0.01


# --- a deadline inside an async generator closed by another task -------------------------

# Long enough that the generator is surely closed before it passes, even on a loaded
# machine: a deadline that passes while its generator is still open does cancel the
# consumer, as asyncio.timeout does.
GEN_BUDGET = 0.3


async def test_deadline_in_an_abandoned_async_generator_never_cancels_the_consumer() -> None:
    # The consumer takes one item and drops the generator; the loop closes it in another
    # task (as its asyncgen finalizer does). The scope's exit there must disarm its timer:
    # the consumer, busy with unrelated work past the budget, is never cancelled.
    closed = asyncio.Event()

    async def numbers() -> object:
        try:
            async with deadline(GEN_BUDGET, name="gen"):
                yield 1
                await hang()
        finally:
            closed.set()

    gen = numbers()
    async for _ in gen:  # type: ignore[attr-defined]
        break
    closer = asyncio.get_running_loop().create_task(gen.aclose())  # type: ignore[attr-defined]
    await closed.wait()
    await closer  # the generator's exit finished normally
    # Past the generator's budget: a stray timer would cancel this sleep.
    await asyncio.sleep(GEN_BUDGET + PAST)
    assert current_deadline() is None or current_deadline().name != "gen"
    assert remaining() == math.inf


async def test_deadline_in_a_generator_finalized_by_the_loop_never_cancels_the_consumer() -> None:
    # The same, left to the loop: its async-generator finalizer closes the generator in
    # a task of its own once nothing refers to it.
    closed = asyncio.Event()

    async def numbers() -> object:
        try:
            async with deadline(GEN_BUDGET, name="gen"):
                yield 1
                await hang()
        finally:
            closed.set()

    async def consume() -> None:
        gen = numbers()
        async for _ in gen:  # type: ignore[attr-defined]
            break

    await consume()  # the generator is unreachable now: the finalizer runs at once
    await closed.wait()
    await asyncio.sleep(GEN_BUDGET + PAST)  # past the budget: a stray timer would cancel this
    assert remaining() == math.inf


async def test_deadline_closed_in_another_task_leaves_no_stale_deadline_in_force() -> None:
    # The generator ran its first step in this task, so its deadline was set in this
    # task's context; once the scope has exited, it must not bind what comes after.
    async def numbers() -> object:
        async with deadline(GEN_BUDGET, name="gen"):
            yield 1

    gen = numbers()
    async for _ in gen:  # type: ignore[attr-defined]
        break
    await asyncio.get_running_loop().create_task(gen.aclose())  # type: ignore[attr-defined]
    assert remaining() == math.inf
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        async with deadline(0.1, name="after"):
            await hang()
    assert info.value.deadline_name == "after"
    assert time.monotonic() - start < 0.1 + MARGIN


async def test_asyncio_timeout_in_the_same_place_finishes_normally() -> None:
    # The reference behaviour hangguard's deadline must match.
    async def numbers() -> object:
        async with asyncio.timeout(0.05):
            yield 1
            await hang()

    gen = numbers()
    async for _ in gen:  # type: ignore[attr-defined]
        break
    await asyncio.get_running_loop().create_task(gen.aclose())  # type: ignore[attr-defined]
    await asyncio.sleep(0.05 + PAST)


# --- the cancellation cause is a value -------------------------------------------------


async def test_deadline_cancel_carries_the_deadline_as_a_value() -> None:
    from hangguard._deadline import DeadlineCancel, deadline_cancel_of

    seen: list[BaseException] = []

    async def body() -> None:
        try:
            await hang()
        except asyncio.CancelledError as exc:
            seen.append(exc)
            raise

    with pytest.raises(DeadlineExceeded):
        async with deadline(0.01, name="fetch"):
            await body()
    cause = deadline_cancel_of(seen[0])
    assert isinstance(cause, DeadlineCancel)
    assert cause.name == "fetch" and cause.budget == 0.01
    assert str(seen[0]) == "hangguard deadline 'fetch' exceeded"
    # Any other cancellation, whatever its message says, is not a deadline's.
    assert deadline_cancel_of(asyncio.CancelledError("hangguard deadline 'x' exceeded")) is None
    assert deadline_cancel_of(asyncio.CancelledError()) is None
