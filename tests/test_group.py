"""TaskGroup: the seed's submit/join semantics, done right."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hangguard
from hangguard import JoinTimeout, TaskGroup
from hangguard._group import _abandoned


async def value(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


async def fail(msg: str = "boom") -> None:
    await asyncio.sleep(0)
    raise ValueError(msg)


async def hang() -> None:
    await asyncio.Event().wait()


async def stubborn(released: asyncio.Event) -> str:
    """Ignores its first cancellation, then waits to be released (or cancelled again)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    await released.wait()
    return "late"


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.2")


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hangguard" and r.exc_info]


async def test_results_in_submit_order_without_dropping_or_flattening() -> None:
    g = TaskGroup("g")
    for x in [3, 0, None, [], [1, 2], "", False]:
        g.submit(value, x)
    assert await g.join() == [3, 0, None, [], [1, 2], "", False]


async def test_return_exceptions_puts_exceptions_in_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = TaskGroup("g")
    g.submit(value, 1)
    g.submit(fail, "x")
    g.submit(value, 2)
    results = await g.join(return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "x"
    assert len(failure_records(caplog)) == 1


async def test_first_failure_raised_as_itself_after_siblings_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = TaskGroup("g")
    sibling = g.submit_named("sibling", hang)
    g.submit(fail, "first")
    with pytest.raises(ValueError, match="first"):
        await g.join()
    assert sibling.done() and sibling.cancelled()
    records = failure_records(caplog)
    assert len(records) == 1 and "first" in str(records[0].exc_info[1])  # type: ignore[index]


async def test_explicit_fail_fast_cancels_siblings_before_join() -> None:
    g = TaskGroup("g", return_exceptions=False)
    sibling = g.submit(hang)
    failing = g.submit(fail)
    await asyncio.wait([failing])
    # The sibling is cancelled by the failure itself, before anyone joins.
    async with asyncio.timeout(5):
        await asyncio.wait([sibling])
    assert sibling.cancelled()
    with pytest.raises(ValueError):
        await g.join()


async def test_default_group_waits_for_join_to_decide() -> None:
    """Op-style groups must not cancel siblings before join says return_exceptions."""
    g = TaskGroup("g")
    gate = asyncio.Event()

    async def slow_ok() -> str:
        await gate.wait()
        return "ok"

    g.submit(slow_ok)
    failing = g.submit(fail)
    await asyncio.wait([failing])
    gate.set()
    results = await g.join(return_exceptions=True)
    assert results[0] == "ok" and isinstance(results[1], ValueError)


async def test_join_timeout_cancels_and_carries_partial_results() -> None:
    g = TaskGroup("searches")
    g.submit_named("a", value, "a")
    g.submit_named("b", hang)
    g.submit_named("c", value, 0)
    with pytest.raises(JoinTimeout) as info:
        await g.join(timeout=0.05)
    err = info.value
    assert isinstance(err, asyncio.TimeoutError) and isinstance(err, hangguard.DeadlineExceeded)
    assert err.results[0] == "a" and err.results[2] == 0
    assert isinstance(err.results[1], hangguard.DeadlineExceeded)
    assert err.pending == ["b"]
    assert err.deadline_name == "join searches" and err.budget == 0.05
    assert "b" in str(err) and "searches" in str(err)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_enclosing_deadline_caps_join_and_is_named() -> None:
    g = TaskGroup("g")
    g.submit(value, 1)
    g.submit_named("stuck", hang)
    with pytest.raises(JoinTimeout) as info:
        async with hangguard.deadline(0.05, name="op budget"):
            await g.join(timeout=30)
    assert info.value.deadline_name == "op budget"
    assert info.value.results[0] == 1 and info.value.pending == ["stuck"]


async def test_env_join_timeout_and_explicit_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_JOIN_TIMEOUT", "50ms")
    g = TaskGroup("g")
    g.submit(hang)
    with pytest.raises(JoinTimeout) as info:
        await g.join()
    assert info.value.budget == pytest.approx(0.05)
    monkeypatch.setenv("HANGGUARD_JOIN_TIMEOUT", "0.01")
    g = TaskGroup("g")
    g.submit(asyncio.sleep, 0.05)
    assert await g.join(timeout=10) == [None]


async def test_bad_env_is_reported_at_join(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_JOIN_TIMEOUT", "soon")
    g = TaskGroup("g")
    g.submit(value, 1)
    with pytest.raises(hangguard.ConfigError, match="HANGGUARD_JOIN_TIMEOUT"):
        await g.join()
    assert await g.join(timeout=1) == [1]  # the bad value left the group joinable


@pytest.mark.parametrize("bad", [math.nan, -1.0])
async def test_invalid_timeouts_name_the_parameter(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TaskGroup("g", timeout=bad)
    g = TaskGroup("g")
    with pytest.raises(ValueError, match="timeout"):
        await g.join(timeout=bad)


async def test_invalid_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        TaskGroup("g", limit=0)
    with pytest.raises(TypeError, match="limit"):
        TaskGroup("g", limit=1.5)  # type: ignore[arg-type]


async def test_plain_function_and_coroutine_object_are_type_errors() -> None:
    g = TaskGroup("g")
    with pytest.raises(TypeError, match="coroutine function"):
        g.submit(len, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not submit\(fn\(\*args\)\)"):
        g.submit(value(1))  # type: ignore[arg-type]
    assert await g.join() == []


async def test_swallowed_cancellation_cannot_hang_join(
    caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    released = asyncio.Event()
    g = TaskGroup("g")
    task = g.submit_named("stubborn", stubborn, released)
    with pytest.raises(JoinTimeout) as info:
        await g.join(timeout=0.05)
    assert info.value.pending == ["stubborn"]
    assert not task.done() and task in _abandoned
    assert any("ignored cancellation" in r.getMessage() for r in caplog.records)
    group_span = next(s for s in spans.get_finished_spans() if s.name == "group g")
    assert any(e.name == "hangguard.cancel_ignored" for e in group_span.events)
    released.set()
    assert await task == "late"
    assert task not in _abandoned


async def test_partial_results_are_those_of_the_moment_the_join_gave_up() -> None:
    # The results are made when first read, from what the join saw when it gave up: a
    # task that ignored its cancel and finished later still shows as unfinished, and a
    # pickled copy taken before anything read them carries them too.
    import pickle

    released = asyncio.Event()
    g = TaskGroup("g")
    g.submit_named("quick", value, 1)
    task = g.submit_named("stubborn", stubborn, released)
    with pytest.raises(JoinTimeout) as info:
        await g.join(timeout=0.05)
    released.set()
    assert await task == "late"  # it ended after the join had given up on it
    exc = info.value
    copy = pickle.loads(pickle.dumps(exc))
    results = exc.results
    assert results[0] == 1
    assert isinstance(results[1], hangguard.DeadlineExceeded)
    assert not isinstance(results[1], JoinTimeout)
    assert "task 'stubborn' did not finish before" in str(results[1])
    assert exc.results is results  # made once
    assert copy.pending == ["stubborn"] and copy.results[0] == 1
    assert str(copy.results[1]) == str(results[1])
    exc.results = ["replaced"]
    assert exc.results == ["replaced"]
    # Read while the task still runs, too (its outcome does not exist yet).
    still = asyncio.Event()
    g2 = TaskGroup("g2")
    running = g2.submit_named("stubborn", stubborn, still)
    with pytest.raises(JoinTimeout) as info2:
        await g2.join(timeout=0.05)
    assert not running.done()
    assert isinstance(info2.value.results[0], hangguard.DeadlineExceeded)
    still.set()
    assert await running == "late"


async def test_limit_bounds_concurrency() -> None:
    running = 0
    peak = 0
    gates = [asyncio.Event() for _ in range(6)]

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gates[i].wait()
        running -= 1
        return i

    g = TaskGroup("g", limit=2)
    tasks = [g.submit(work, i) for i in range(6)]
    for i in range(6):
        await asyncio.sleep(0)
        gates[i].set()
    assert await g.join() == list(range(6))
    assert peak == 2 and all(t.done() for t in tasks)


async def test_serial_mode_runs_in_order_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_SERIAL", "1")
    caplog.set_level(logging.INFO, logger="hangguard")
    order: list[str] = []

    async def step(name: str, delay: float) -> str:
        order.append(f"start {name}")
        await asyncio.sleep(delay)
        order.append(f"end {name}")
        return name

    g = TaskGroup("g")
    g.submit_named("a", step, "a", 0.02)
    g.submit_named("b", step, "b", 0)
    g.submit_named("c", fail)
    results = await g.join(return_exceptions=True)
    assert results[:2] == ["a", "b"] and isinstance(results[2], ValueError)
    assert order == ["start a", "end a", "start b", "end b"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("task 'a' started" in m for m in messages)
    assert any("task 'b' succeeded" in m for m in messages)
    assert any("task 'c' failed" in m for m in messages)


async def test_parent_cancellation_cancels_children() -> None:
    g = TaskGroup("g")
    child = g.submit(hang)
    joiner = asyncio.create_task(g.join())
    await asyncio.sleep(0)
    joiner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await joiner
    assert child.cancelled()


async def test_async_with_joins_at_exit_and_stops_the_body_on_failure() -> None:
    reached_end = False
    with pytest.raises(ValueError, match="boom"):
        async with TaskGroup("g") as g:
            g.submit(fail)
            sibling = g.submit(hang)
            await asyncio.Event().wait()
            reached_end = True
    assert not reached_end and sibling.cancelled()

    async with TaskGroup("h") as h:
        t = h.submit(value, 5)
    assert t.result() == 5


async def test_async_with_body_error_cancels_tasks() -> None:
    with pytest.raises(KeyError):
        async with TaskGroup("g") as g:
            child = g.submit(hang)
            raise KeyError("body")
    assert child.cancelled()


async def test_submit_after_join_is_an_error() -> None:
    g = TaskGroup("g")
    await g.join()
    with pytest.raises(RuntimeError, match="already joined"):
        g.submit(value, 1)


# -- spans --------------------------------------------------------------------------


async def test_span_tree_and_attributes(spans: InMemorySpanExporter) -> None:
    g = TaskGroup("searches")
    g.submit_named("ok", value, 1)
    g.submit_named("bad", fail)
    g.submit_named("slow", hang)
    with pytest.raises(ValueError):
        await g.join()
    finished = {s.name: s for s in spans.get_finished_spans()}
    group = finished["group searches"]
    assert group.attributes is not None
    assert group.attributes["hangguard.group.name"] == "searches"
    assert group.attributes["hangguard.group.size"] == 3
    assert group.attributes["hangguard.group.failed"] == 1
    assert group.attributes["hangguard.group.cancelled"] == 1
    for name in ("task ok", "task bad", "task slow"):
        assert finished[name].parent is not None
        assert finished[name].parent.span_id == group.context.span_id
        assert finished[name].attributes["hangguard.task.name"] == name[5:]  # type: ignore[index]
    bad = finished["task bad"]
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.attributes["error.type"] == "ValueError"  # type: ignore[index]
    assert any(e.name == "exception" for e in bad.events)
    slow = finished["task slow"]
    assert slow.status.status_code is not StatusCode.ERROR  # cancellation is not an error
    (event,) = [e for e in slow.events if e.name == "hangguard.cancelled"]
    assert event.attributes is not None
    assert event.attributes["hangguard.cancel.reason"] == "sibling_failed"
    assert event.attributes["hangguard.cancel.cause"] == "bad"
    assert "in hang" in str(event.attributes["hangguard.task.stack"])


async def test_timeout_and_deadline_reasons(spans: InMemorySpanExporter) -> None:
    g = TaskGroup("a")
    g.submit_named("x", hang)
    with pytest.raises(JoinTimeout):
        await g.join(timeout=0.01)
    g = TaskGroup("b")
    g.submit_named("y", hang)
    with pytest.raises(JoinTimeout):
        async with hangguard.deadline(0.01, name="budget"):
            await g.join()
    events = {
        s.name: next(e for e in s.events if e.name == "hangguard.cancelled")
        for s in spans.get_finished_spans()
        if s.name in ("task x", "task y")
    }
    assert events["task x"].attributes == {
        "hangguard.cancel.reason": "timeout",
        "hangguard.cancel.cause": "a",
        "hangguard.task.stack": events["task x"].attributes["hangguard.task.stack"],  # type: ignore[index]
    }
    assert events["task y"].attributes["hangguard.cancel.reason"] == "deadline"  # type: ignore[index]
    assert events["task y"].attributes["hangguard.cancel.cause"] == "budget"  # type: ignore[index]
    group_a = next(s for s in spans.get_finished_spans() if s.name == "group a")
    assert group_a.attributes["hangguard.group.timed_out"] is True  # type: ignore[index]
    assert group_a.attributes["hangguard.timeout_s"] == 0.01  # type: ignore[index]


async def test_nested_spans_inside_tasks_are_children(spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("test")

    async def inner() -> None:
        with tracer.start_as_current_span("inner work"):
            await asyncio.sleep(0)

    g = TaskGroup("g")
    g.submit_named("t", inner)
    await g.join()
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["inner work"].parent.span_id == finished["task t"].context.span_id  # type: ignore[union-attr]


def test_untraced_group_does_no_span_work() -> None:
    """With only the API (no SDK provider), tasks run the user's coroutine directly."""
    code = textwrap.dedent(
        """
        import asyncio, hangguard
        from hangguard import _semconv, _spans
        async def work():
            return asyncio.current_task().get_coro().__qualname__
        async def main():
            assert _spans.get_tracer() is None
            g = hangguard.TaskGroup("g")
            g.submit(work)
            print((await g.join())[0])
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "work"


# -- regressions --------------------------------------------------------------------


async def test_cancelled_waiters_for_a_slot_stay_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Queued tasks cancelled by a join timeout end cancelled, not with a limiter error."""
    g = TaskGroup("g", limit=1)
    tasks = [g.submit_named(f"t{i}", hang) for i in range(3)]
    with pytest.raises(JoinTimeout) as info:
        await g.join(timeout=0.01)
    assert all(t.cancelled() for t in tasks)
    assert info.value.pending == ["t0", "t1", "t2"]
    assert failure_records(caplog) == []


async def test_deadline_during_the_grace_still_gives_the_join_timeout(
    monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.5")
    cleaning = asyncio.Event()
    cleaned = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await cleaned.wait()  # cleanup outlives the enclosing deadline

    g = TaskGroup("g")
    task = g.submit_named("s", slow_cleanup)
    with pytest.raises(JoinTimeout) as info:
        async with hangguard.deadline(0.3, name="outer"):
            await g.join(timeout=0.05)
    assert info.value.deadline_name == "join g"  # the join's own timeout fired first
    assert cleaning.is_set()
    assert "group g" in [s.name for s in spans.get_finished_spans()]
    cleaned.set()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_bad_timeout_leaves_the_group_joinable() -> None:
    g = TaskGroup("g")
    task = g.submit(value, 7)
    with pytest.raises(ValueError, match="timeout"):
        await g.join(timeout=-1)
    assert await g.join(timeout=5) == [7]
    assert task.done()


async def test_async_with_and_a_bad_env_cancels_the_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_JOIN_TIMEOUT", "soon")
    with pytest.raises(hangguard.ConfigError, match="HANGGUARD_JOIN_TIMEOUT"):
        async with TaskGroup("g") as g:
            child = g.submit(hang)
    assert child.cancelled()


async def test_a_task_that_finishes_within_the_grace_keeps_its_outcome() -> None:
    async def answer_when_cancelled() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "partial"
        return "never"

    g = TaskGroup("g")
    g.submit_named("a", answer_when_cancelled)
    g.submit_named("b", hang)
    with pytest.raises(JoinTimeout) as info:
        await g.join(timeout=0.01)
    assert info.value.results[0] == "partial"
    assert isinstance(info.value.results[1], hangguard.DeadlineExceeded)
    assert info.value.pending == ["b"]


# -- task names ------------------------------------------------------------------------------


class _Base:
    async def async_call(self) -> str:
        return type(self).__name__

    async def fetch(self) -> str:
        return "fetched"


class _Search(_Base):
    pass


async def test_bound_methods_name_tasks_after_the_object_class_not_the_defining_one() -> None:
    g = TaskGroup("names")
    g.submit(_Search().async_call)  # an op's entry point: the op's name
    g.submit(_Search().fetch)  # any other method: class and method
    g.submit(functools.partial(_Search().async_call))
    g.submit(value, 1)
    assert await g.join() == ["_Search", "fetched", "_Search", 1]
    assert [g.task_name(i) for i in range(4)] == [
        "_Search[0]",
        "_Search.fetch[1]",
        "_Search[2]",
        "value[3]",
    ]


async def test_tasks_are_named_after_their_own_function_when_the_functions_alternate() -> None:
    # submit records a function only when it differs from the last one (a run): each
    # index must still find its own.
    g = TaskGroup("runs")
    for fn in (value, value, _Search().fetch, value, _Search().fetch, _Search().fetch):
        if fn is value:
            g.submit(value, 0)
        else:
            g.submit(fn)
    g.submit_named("named", value, 0)
    g.submit(value, 0)
    await g.join()
    assert [g.task_name(i) for i in range(len(g))] == [
        "value[0]",
        "value[1]",
        "_Search.fetch[2]",
        "value[3]",
        "_Search.fetch[4]",
        "_Search.fetch[5]",
        "named",
        "value[7]",
    ]


async def test_a_submit_whose_task_cannot_be_created_leaves_no_name_behind() -> None:
    loop = asyncio.get_running_loop()
    refused = RuntimeError("no task for you")
    refusing = False

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if refusing:  # the coroutine may be the group's traced wrapper: refuse by turn
            coro.close()
            raise refused
        return asyncio.Task(coro, loop=loop, **kwargs)

    g = TaskGroup("refused")
    g.submit(value, 1)
    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        refusing = True
        with pytest.raises(RuntimeError) as caught:
            g.submit(_Search().fetch)
        assert caught.value is refused
        refusing = False
        g.submit(value, 2)
    finally:
        loop.set_task_factory(None)
    g.submit(_Search().fetch)
    assert await g.join() == [1, 2, "fetched"]
    assert [g.task_name(i) for i in range(len(g))] == ["value[0]", "value[1]", "_Search.fetch[2]"]


async def test_membership_and_a_join_from_inside_the_group() -> None:
    g = TaskGroup("self")
    entered = asyncio.Event()

    async def joins_its_own_group() -> None:
        entered.set()
        await g.join()

    first = g.submit(value, 1)
    inner = g.submit_named("inner", joins_its_own_group)
    await entered.wait()
    assert first in g and inner in g and asyncio.current_task() not in g
    assert object() not in g
    with pytest.raises(RuntimeError, match=r"joined from one of its own tasks \('inner'\)"):
        await g.join()


# -- results after ``async with`` ------------------------------------------------------------


async def test_results_are_read_after_the_async_with_block_in_submit_order() -> None:
    async with TaskGroup("block") as g:
        first = g.submit(value, "a")
        g.submit(value, ["b"])
        g.submit_named("third", value, None)
        with pytest.raises(RuntimeError, match=r"'block' is not done yet \(open\)"):
            g.results  # noqa: B018 - the property is what is tested
    assert g.results == ["a", ["b"], None]
    assert first.result() == g.results[0]
    g.results.append("not kept")  # a new list each time
    assert g.results == ["a", ["b"], None]


async def test_results_after_an_explicit_join_are_what_join_returned() -> None:
    g = TaskGroup("explicit")
    g.submit(value, 1)
    g.submit(fail)
    assert await g.join(return_exceptions=True) == g.results
    assert isinstance(g.results[1], ValueError)


async def test_results_say_why_there_are_none_when_the_group_failed_or_timed_out() -> None:
    with pytest.raises(ValueError):
        async with TaskGroup("failing") as g:
            g.submit(value, 1)
            g.submit(fail)
    with pytest.raises(RuntimeError, match="'failing' has no results: its join raised"):
        g.results  # noqa: B018

    slow = TaskGroup("slow", timeout=0.01)
    with pytest.raises(JoinTimeout) as info:
        async with slow:
            slow.submit(hang)
    assert len(info.value.results) == 1  # the partial results are on the exception
    with pytest.raises(RuntimeError, match="JoinTimeout holds the partial results"):
        slow.results  # noqa: B018
