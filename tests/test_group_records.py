"""How a group records its cancellations: attributes on every span, events on a few."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import ConfigError, JoinTimeout, TaskGroup
from hangguard._group import STACK_CAPTURES

REASON = "hangguard.cancel.reason"
CAUSE = "hangguard.cancel.cause"
STACK = "hangguard.task.stack"
EVENT = "hangguard.cancelled"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.2")
    monkeypatch.delenv("HANGGUARD_CANCEL_EVENTS", raising=False)


async def hang(started: asyncio.Event | None = None) -> None:
    if started is not None:
        started.set()
    await asyncio.Event().wait()


def task_spans(spans: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans.get_finished_spans() if s.name.startswith("task ")}


def group_span(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (group,) = [s for s in spans.get_finished_spans() if s.name == f"group {name}"]
    return group


def cancel_events(span: ReadableSpan) -> list[Any]:
    return [e for e in span.events if e.name == EVENT]


async def test_every_cancelled_task_carries_reason_and_cause_and_the_first_16_an_event(
    spans: InMemorySpanExporter,
) -> None:
    g = TaskGroup("many")
    for i in range(50):
        g.submit_named(f"t{i}", hang)
    with pytest.raises(JoinTimeout):
        await g.join(timeout=0.01)
    tasks = task_spans(spans)
    assert len(tasks) == 50
    for span in tasks.values():
        assert span.attributes is not None
        assert (span.attributes[REASON], span.attributes[CAUSE]) == ("timeout", "many")
    events = [e for s in tasks.values() for e in cancel_events(s)]
    assert len(events) == hangguard._config.DEFAULT_CANCEL_EVENTS == 16
    assert all(e.attributes[REASON] == "timeout" for e in events)
    with_stack = [e for e in events if STACK in (e.attributes or {})]
    assert len(with_stack) == STACK_CAPTURES
    # The events go to the first tasks in submit order.
    assert {s.name for s in tasks.values() if cancel_events(s)} == {f"task t{i}" for i in range(16)}
    group = group_span(spans, "many")
    assert group.attributes is not None
    assert group.attributes["hangguard.group.cancelled"] == 50
    assert group.attributes["hangguard.group.cancel_ignored"] == 0
    assert group.attributes["hangguard.group.abandoned"] == 0


@pytest.mark.parametrize("k", [0, 3])
async def test_the_number_of_cancel_events_comes_from_the_env(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_EVENTS", str(k))
    g = TaskGroup("few")
    for i in range(10):
        g.submit_named(f"t{i}", hang)
    with pytest.raises(JoinTimeout):
        await g.join(timeout=0.01)
    tasks = task_spans(spans)
    assert sum(len(cancel_events(s)) for s in tasks.values()) == k
    assert all(s.attributes is not None and s.attributes[REASON] for s in tasks.values())


async def test_a_bad_cancel_events_value_fails_the_group_naming_the_variable(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_EVENTS", "-1")
    with pytest.raises(ConfigError, match="HANGGUARD_CANCEL_EVENTS"):
        TaskGroup("bad")


async def test_the_events_go_to_tasks_that_ran_with_where_they_were_stuck(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_EVENTS", "3")
    with pytest.raises(RuntimeError, match="body"):
        async with TaskGroup("mixed") as g:
            started = [asyncio.Event() for _ in range(3)]
            for i, event in enumerate(started):
                g.submit_named(f"early{i}", hang, event)
            for event in started:
                await event.wait()
            for i in range(10):  # never get to run: cancelled before their first step
                g.submit_named(f"late{i}", hang)
            raise RuntimeError("body")
    tasks = task_spans(spans)
    assert len(tasks) == 13
    assert sorted(name for name, s in tasks.items() if cancel_events(s)) == [
        "task early0",
        "task early1",
        "task early2",
    ]
    for i in range(3):
        (event,) = cancel_events(tasks[f"task early{i}"])
        assert "in hang" in str(event.attributes[STACK])
    for span in tasks.values():
        assert span.attributes is not None
        assert span.attributes[REASON] == "parent_cancelled"


async def test_tasks_cancelled_before_running_still_carry_the_attributes(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_EVENTS", "2")
    with pytest.raises(RuntimeError):
        async with TaskGroup("unstarted") as g:
            for i in range(5):
                g.submit_named(f"t{i}", hang)
            raise RuntimeError("at once")
    tasks = task_spans(spans)
    assert len(tasks) == 5
    assert sum(len(cancel_events(s)) for s in tasks.values()) == 2
    for span in tasks.values():
        assert span.attributes is not None
        assert span.attributes[REASON] == "parent_cancelled"
        assert span.attributes[CAUSE] == "unstarted body raised RuntimeError"


async def test_a_task_cancelled_from_outside_carries_the_attributes_too(
    spans: InMemorySpanExporter,
) -> None:
    started = asyncio.Event()
    g = TaskGroup("outside")
    task = g.submit_named("victim", hang, started)
    await started.wait()
    task.cancel()
    await g.join(return_exceptions=True)
    span = task_spans(spans)["task victim"]
    assert span.attributes is not None
    assert span.attributes[REASON] == "parent_cancelled"
    assert len(cancel_events(span)) == 1


async def test_the_group_span_counts_ignored_and_abandoned_cancellations(
    spans: InMemorySpanExporter,
) -> None:
    released = asyncio.Event()
    all_started = [asyncio.Event() for _ in range(3)]

    async def returns_anyway(started: asyncio.Event) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        return "swallowed"

    async def runs_on(started: asyncio.Event) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        await released.wait()
        return "late"

    g = TaskGroup("stubborn")
    g.submit_named("polite", hang, all_started[0])
    g.submit_named("returns", returns_anyway, all_started[1])
    late = g.submit_named("runs on", runs_on, all_started[2])
    for event in all_started:
        await event.wait()
    with pytest.raises(JoinTimeout):
        await g.join(timeout=0.01)
    group = group_span(spans, "stubborn")
    assert group.attributes is not None
    assert group.attributes["hangguard.group.cancelled"] == 1
    assert group.attributes["hangguard.group.cancel_ignored"] == 2
    assert group.attributes["hangguard.group.abandoned"] == 1
    released.set()
    assert await late == "late"
