"""Telemetry never changes an outcome: exceptions that cannot be printed, failing spans.

Each test runs the same failure traced (the session's SDK provider with an in-memory
exporter) and checks that the caller gets exactly the exception the work raised, and
that whatever the span could not record is replaced by a stand-in, not an error.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, StatusCode

import hangguard
from hangguard import _spans
from hangguard.mcp._capture import captured
from hangguard.testing import disable_backoff


class Unprintable(Exception):
    """An exception whose ``str()`` itself raises (a real-world bug in some libraries)."""

    def __str__(self) -> str:
        raise TypeError("__str__ returned non-string (type NoneType)")


async def fail_unprintably() -> None:
    raise Unprintable("boom")


def test_safe_str_stands_in_for_a_failing_str() -> None:
    assert _spans.safe_str(ValueError("plain")) == "plain"
    text = _spans.safe_str(Unprintable())
    assert "Unprintable" in text and "str() failed" in text


async def test_traced_group_raises_the_unprintable_exception_itself(
    spans: InMemorySpanExporter,
) -> None:
    group = hangguard.TaskGroup("g")
    group.submit_named("bad", fail_unprintably)
    with pytest.raises(Unprintable):
        await group.join()
    finished = {s.name: s for s in spans.get_finished_spans()}
    task_span = finished["task bad"]
    assert task_span.status.status_code is StatusCode.ERROR
    assert "str() failed" in (task_span.status.description or "")
    event = next(e for e in task_span.events if e.name == "exception")
    assert event.attributes is not None
    assert event.attributes["exception.type"].endswith("Unprintable")
    assert finished["group g"].status.status_code is StatusCode.ERROR


async def test_traced_function_raises_the_unprintable_exception_itself(
    spans: InMemorySpanExporter,
) -> None:
    @hangguard.traced(budget=5)
    async def work() -> None:
        await fail_unprintably()

    with pytest.raises(Unprintable):
        await work()
    (span,) = [s for s in spans.get_finished_spans() if s.name == "work"]
    assert span.status.status_code is StatusCode.ERROR


async def test_retry_events_survive_an_unprintable_exception(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unprintable()
        return "ok"

    @hangguard.traced(budget=5)
    async def outer() -> str:
        return await hangguard.retry_call(flaky, hangguard.RetryPolicy(attempts=2))

    with disable_backoff(), caplog.at_level(logging.WARNING, logger="hangguard"):
        assert await outer() == "ok"
    (span,) = [s for s in spans.get_finished_spans() if s.name == "outer"]
    retry = next(e for e in span.events if e.name == "hangguard.retry")
    assert retry.attributes is not None
    assert "str() failed" in str(retry.attributes["exception.message"])
    assert any("retrying" in r.getMessage() for r in caplog.records)


class _BrokenSpan(NonRecordingSpan):
    """A recording span whose every write fails, like an exporter-side bug would."""

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        raise RuntimeError("span store is broken")


def test_a_failure_inside_telemetry_is_logged_once_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    span: Span = _BrokenSpan(NonRecordingSpan(None).get_span_context())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="hangguard"):
        _spans.record_failure(span, ValueError("the real failure"))
    logged = [r for r in caplog.records if "telemetry" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None and "span store is broken" in str(logged[0].exc_info[1])


def test_captured_arguments_survive_an_unprintable_value() -> None:
    class Opaque:
        def __str__(self) -> str:
            raise TypeError("no")

    text = captured({"q": Opaque()}, 200)
    assert "str() failed" in text


async def test_group_outcome_is_the_same_traced_and_untraced(
    spans: InMemorySpanExporter,
) -> None:
    group = hangguard.TaskGroup("g")
    group.submit(fail_unprintably)
    results = await group.join(return_exceptions=True)
    assert isinstance(results[0], Unprintable)
