"""The blocked-event-loop watchdog, on a real loop blocked by real blocking calls."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import ConfigError, _semconv, _watchdog

THRESHOLD = 0.1
BLOCK = 0.4


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def blocked_events(self) -> list[tuple[ReadableSpan, dict[str, object]]]:
        return [
            (s, dict(e.attributes or {}))
            for s in self.spans()
            for e in s.events
            if e.name == _semconv.EVENT_LOOP_BLOCKED
        ]

    def histogram_count(self) -> int:
        data = self.reader.get_metrics_data()
        count = 0
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == _semconv.METRIC_LOOP_BLOCKED:
                        count += sum(p.count for p in m.data.data_points)  # type: ignore[attr-defined]
        return count


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    with hangguard.use_providers(tracer_provider=t.provider, meter_provider=t.meters):
        yield t


def blocking_parse() -> None:
    time.sleep(BLOCK)  # a real blocking call on the event loop


async def settle_one_beat() -> None:
    """Let the loop run its heartbeat after a block, so the block is reported."""
    await asyncio.sleep(0.1)


def warnings_about_blocks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "hangguard" and r.levelno == logging.WARNING and "loop blocked" in r.msg
    ]


async def test_a_block_in_our_op_is_an_event_on_its_span_with_the_blocking_frame(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:

        @hangguard.traced(budget=math.inf)
        async def op() -> None:
            blocking_parse()
            await settle_one_beat()  # the span is still open when the loop resumes

        await op()
    finally:
        dog.stop()
    ((span, attrs),) = telemetry.blocked_events()
    assert span.name == "op"
    assert float(attrs[_semconv.ATTR_LOOP_BLOCKED_S]) >= BLOCK * 0.9  # type: ignore[arg-type]
    # Sampled while blocked: the innermost frame is the blocking call's line.
    assert str(attrs[_semconv.ATTR_LOOP_STACK]).splitlines()[0].endswith("in blocking_parse")
    assert attrs[_semconv.ATTR_LOOP_THRESHOLD_S] == THRESHOLD
    (record,) = warnings_about_blocks(caplog)
    assert "blocking_parse" in record.getMessage()
    assert telemetry.histogram_count() == 1


async def test_a_block_outside_our_spans_is_a_span_of_its_own(telemetry: Telemetry) -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:
        blocking_parse()
        await settle_one_beat()
    finally:
        dog.stop()
    ((span, attrs),) = telemetry.blocked_events()
    assert span.name == _semconv.SPAN_LOOP_BLOCKED and span.parent is None
    assert str(attrs[_semconv.ATTR_LOOP_STACK]).splitlines()[0].endswith("in blocking_parse")
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= BLOCK * 0.9


async def test_repeated_blocks_at_one_frame_are_reported_once_and_all_counted(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:
        for _ in range(3):
            blocking_parse()
            await settle_one_beat()
    finally:
        dog.stop()
    assert len(telemetry.blocked_events()) == 1
    assert len(warnings_about_blocks(caplog)) == 1
    assert telemetry.histogram_count() == 3


async def test_an_idle_or_busy_loop_is_not_reported(telemetry: Telemetry) -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:
        await asyncio.sleep(0.5)  # idle
        for _ in range(2000):  # busy with short callbacks
            await asyncio.sleep(0)
    finally:
        dog.stop()
    assert telemetry.blocked_events() == []
    assert telemetry.histogram_count() == 0


async def test_a_deadline_that_fired_late_says_where_the_loop_was_blocked() -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:

        @hangguard.traced(budget=0.1)
        async def op() -> None:
            blocking_parse()
            await asyncio.sleep(10)

        with pytest.raises(hangguard.DeadlineExceeded) as info:
            await op()
    finally:
        dog.stop()
    message = str(info.value)
    assert "s late: the loop was blocked in" in message
    assert "in blocking_parse" in message


async def test_a_join_timeout_that_fired_late_says_so(telemetry: Telemetry) -> None:
    dog = hangguard.watch_loop(THRESHOLD)

    async def blocker() -> None:
        blocking_parse()

    never = asyncio.Event()
    try:
        group = hangguard.TaskGroup("late")
        group.submit(blocker)
        group.submit(never.wait)
        with pytest.raises(hangguard.JoinTimeout) as info:
            await group.join(timeout=0.05)
    finally:
        dog.stop()
    assert "late: the loop was blocked in" in str(info.value)
    assert "blocking_parse" in str(info.value)


def test_the_env_turns_it_on_for_the_loops_hangguard_runs_in(
    monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry
) -> None:
    monkeypatch.setenv("HANGGUARD_LOOP_BLOCK_THRESHOLD", "100ms")

    @hangguard.traced
    async def op() -> None:
        blocking_parse()
        await settle_one_beat()

    asyncio.run(op())
    ((span, _),) = telemetry.blocked_events()
    assert span.name == "op"
    # The loop is closed: its monitor thread ends (within one threshold).
    for t in threading.enumerate():
        if t.name == "hangguard-loop-watchdog":
            t.join(10)
    assert not any(t.name == "hangguard-loop-watchdog" for t in threading.enumerate())


def test_setup_tracing_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANGGUARD_LOOP_BLOCK_THRESHOLD", raising=False)
    try:
        handle = hangguard.setup_tracing(set_global=False, loop_block_threshold=0.25)
        handle.shutdown()
        assert _watchdog._enabled == 0.25
    finally:
        _watchdog.enable(None)


def test_bad_thresholds_name_the_parameter_or_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="loop_block_threshold"):
        hangguard.setup_tracing(set_global=False, loop_block_threshold=-1)
    monkeypatch.setenv("HANGGUARD_LOOP_BLOCK_THRESHOLD", "soon")
    with pytest.raises(ConfigError, match="HANGGUARD_LOOP_BLOCK_THRESHOLD"):
        hangguard.setup_tracing(set_global=False)
    with pytest.raises(ValueError, match="threshold"):
        hangguard.watch_loop(0)


async def test_watch_loop_twice_returns_the_running_watchdog() -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:
        assert hangguard.watch_loop(THRESHOLD) is dog
        assert dog.running and dog.loop is asyncio.get_running_loop()
    finally:
        dog.stop()
    assert not dog.running
    again = hangguard.watch_loop(THRESHOLD)
    assert again is not dog
    again.stop()


async def test_a_long_block_is_logged_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    dog = hangguard.watch_loop(THRESHOLD)
    try:
        time.sleep(dog.still_blocked_after + 0.3)  # noqa: ASYNC251 - the block under test
        await settle_one_beat()
    finally:
        dog.stop()
    still = [r for r in caplog.records if "still blocked" in r.getMessage()]
    assert len(still) == 1
    assert "test_a_long_block_is_logged_while_it_lasts" in still[0].getMessage()
    assert len(warnings_about_blocks(caplog)) == 1  # and the report after it resumed
