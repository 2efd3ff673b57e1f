"""ThreadGroup, to_thread and checkpoint, on real threads and real blocking calls.

A stuck thread is a ``recv()`` on a loopback socket that accepts and never answers, a
``threading.Event`` that is never set, or ``time.sleep``. Every thread a test abandons is
released at teardown (its event set, its socket closed), so nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import _semconv
from hangguard.testing import FakeClock, use_clock

#: Real-time margin for "returned on time": wide, the machine is shared.
MARGIN = 1.5


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def metric(self, name: str) -> float:
        data = self.reader.get_metrics_data()
        total = 0.0
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            total += getattr(p, "value", 0) or getattr(p, "sum", 0)
        return total


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    with hangguard.use_providers(tracer_provider=t.provider, meter_provider=t.meters):
        yield t


@pytest.fixture
def release() -> Iterator[Callable[[], threading.Event]]:
    """Events for threads to block on; all of them are set at teardown."""
    events: list[threading.Event] = []

    def make() -> threading.Event:
        ev = threading.Event()
        events.append(ev)
        return ev

    yield make
    for ev in events:
        ev.set()


@pytest.fixture
def stuck_reader(blackhole: str) -> Iterator[Callable[[], bytes]]:
    """A function that connects to the blackhole and blocks in ``recv()`` until teardown."""
    host, port = blackhole.split(":")
    socks: list[socket.socket] = []
    lock = threading.Lock()

    def read() -> bytes:
        s = socket.create_connection((host, int(port)))
        with lock:
            socks.append(s)
        return s.recv(1)  # the blackhole never answers: this blocks

    yield read
    with lock:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv()
            s.close()


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hangguard" and r.exc_info]


def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


# --- results and failures ------------------------------------------------------------------


def test_results_come_back_in_submit_order_with_kwargs_passed_through() -> None:
    def work(x: int, *, name: str) -> str:
        time.sleep(0.01 * (5 - x))  # later ones finish first
        return f"{name}{x}"

    group = hangguard.ThreadGroup("order")
    for i in range(5):
        group.submit(work, i, name="n")  # name= reaches the function, not the group
    assert group.join() == ["n0", "n1", "n2", "n3", "n4"]


def test_exceptions_stand_in_place_and_each_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = hangguard.ThreadGroup("mixed")
    group.submit(lambda: 1)
    group.submit(boom, 2)
    group.submit(lambda: 3)
    results = group.join(return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "boom 2"
    logged = failure_logs(caplog)
    assert len(logged) == 1 and "mixed" in logged[0].getMessage()


def test_the_first_failure_is_raised_and_a_cooperative_sibling_stops_at_its_checkpoint(
    release: Callable[[], threading.Event],
) -> None:
    stopped: list[BaseException] = []
    started = release()

    def cooperative() -> None:
        started.set()
        try:
            while True:
                hangguard.checkpoint()
                time.sleep(0.005)
        except hangguard.ThreadCancelled as exc:
            stopped.append(exc)
            raise

    def fail_after_start() -> None:
        started.wait(10)
        raise ValueError("first")

    group = hangguard.ThreadGroup("strict")
    group.submit(cooperative)
    group.submit(fail_after_start)
    with pytest.raises(ValueError, match="first"):
        group.join()
    assert len(stopped) == 1
    assert stopped[0].reason == "sibling_failed"


def test_a_sibling_that_never_checks_is_abandoned_after_the_grace_and_the_failure_raised(
    monkeypatch: pytest.MonkeyPatch, release: Callable[[], threading.Event]
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.2")
    never = release()
    group = hangguard.ThreadGroup("strict")
    group.submit(never.wait)
    group.submit(boom, 1)
    started = time.monotonic()
    with pytest.raises(ValueError, match="boom 1"):
        group.join()
    assert time.monotonic() - started < 0.2 + MARGIN


# --- timeouts and abandoned threads --------------------------------------------------------


def test_join_timeout_returns_on_time_with_partial_results_and_the_stuck_stack(
    telemetry: Telemetry, stuck_reader: Callable[[], bytes]
) -> None:
    group = hangguard.ThreadGroup("fetch")
    group.submit(lambda: "fast")
    group.submit(stuck_reader)
    started = time.monotonic()
    with pytest.raises(hangguard.JoinTimeout) as info:
        group.join(timeout=0.3)
    assert time.monotonic() - started < 0.3 + MARGIN
    err = info.value
    assert err.results[0] == "fast"
    assert isinstance(err.results[1], hangguard.DeadlineExceeded)
    assert "abandoned" in str(err.results[1])
    assert err.pending == [f"{stuck_reader.__qualname__}[1]"]
    assert "1 abandoned still running" in str(err)

    stuck = telemetry.span(f"task {stuck_reader.__qualname__}[1]")
    (event,) = [e for e in stuck.events if e.name == _semconv.EVENT_CANCELLED]
    assert event.attributes is not None
    assert event.attributes[_semconv.ATTR_CANCEL_REASON] == _semconv.CANCEL_TIMEOUT
    stack = str(event.attributes[_semconv.ATTR_TASK_STACK])
    # Where the thread is blocked, innermost first: the recv() line of read().
    assert stack.splitlines()[0].endswith("in read")
    assert event.attributes[_semconv.ATTR_THREAD_ID]
    assert str(event.attributes[_semconv.ATTR_THREAD_NAME]).startswith("hangguard-")
    group_span = telemetry.span("group fetch")
    assert group_span.attributes is not None
    assert group_span.attributes[_semconv.ATTR_GROUP_ABANDONED] == 1
    assert group_span.attributes[_semconv.ATTR_GROUP_TIMED_OUT] is True
    assert telemetry.metric(_semconv.METRIC_THREADS_ABANDONED) == 1


def test_join_is_bounded_by_the_enclosing_deadline_in_sync_code(
    release: Callable[[], threading.Event],
) -> None:
    never = release()
    with hangguard.deadline(0.3, name="batch"):
        group = hangguard.ThreadGroup("batch-work")
        group.submit(never.wait)
        with pytest.raises(hangguard.JoinTimeout) as info:
            group.join(timeout=60)
    assert info.value.deadline_name == "batch"
    assert "'batch'" in str(info.value)


def test_after_a_timeout_checkpoint_raises_deadline_exceeded_in_the_abandoned_thread(
    release: Callable[[], threading.Event],
) -> None:
    go_on = release()
    seen: list[BaseException] = []
    done = threading.Event()

    def slow() -> None:
        go_on.wait(10)  # stuck past the join's timeout
        try:
            hangguard.checkpoint()
        except BaseException as exc:
            seen.append(exc)
        done.set()

    group = hangguard.ThreadGroup("slow")
    group.submit(slow)
    with pytest.raises(hangguard.JoinTimeout):
        group.join(timeout=0.1)
    go_on.set()
    assert done.wait(10)
    assert isinstance(seen[0], hangguard.DeadlineExceeded)


class _Signal(logging.Handler):
    """Sets ``event`` when a record with a traceback reaches the root logger.

    Added after pytest's capture handler, so the record is captured when it is set.
    """

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.event.set()


def test_an_abandoned_thread_that_fails_later_is_logged_once(
    caplog: pytest.LogCaptureFixture, release: Callable[[], threading.Event]
) -> None:
    go_on = release()

    def late_failure() -> None:
        go_on.wait(10)
        raise RuntimeError("too late")

    group = hangguard.ThreadGroup("late")
    group.submit(late_failure)
    with pytest.raises(hangguard.JoinTimeout):
        group.join(timeout=0.1)
    signal = _Signal()
    logging.getLogger().addHandler(signal)
    try:
        go_on.set()
        assert signal.event.wait(10)  # logged in the thread, after the function returned
    finally:
        logging.getLogger().removeHandler(signal)
    (record,) = failure_logs(caplog)
    assert "too late" in str(record.exc_info[1]) and "abandoned" in record.getMessage()  # type: ignore[index]


def test_a_hundred_stuck_threads_do_not_delay_the_join(
    release: Callable[[], threading.Event],
) -> None:
    never = release()
    with ThreadPoolExecutor(max_workers=100) as pool:
        group = hangguard.ThreadGroup("many", executor=pool)
        for _ in range(100):
            group.submit(never.wait)
        started = time.monotonic()
        with pytest.raises(hangguard.JoinTimeout) as info:
            group.join(timeout=0.3)
        assert time.monotonic() - started < 0.3 + MARGIN
        assert len(info.value.pending) == 100
        never.set()


# --- saturated pools ---------------------------------------------------------------------


def test_a_task_queued_behind_a_stuck_thread_fails_with_no_free_worker(
    telemetry: Telemetry, release: Callable[[], threading.Event]
) -> None:
    never = release()
    ran: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(never.wait)  # the pool's only worker is stuck
        with hangguard.deadline(0.3, name="report"):
            group = hangguard.ThreadGroup("report", executor=pool)
            group.submit(ran.append, 1)
            with pytest.raises(hangguard.JoinTimeout) as info:
                group.join()
        never.set()
    assert "no free worker" in str(info.value)
    assert "no free worker" in str(info.value.results[0])
    assert ran == []
    assert telemetry.metric(_semconv.METRIC_THREADS_NO_FREE_WORKER) == 1


def test_a_task_whose_deadline_passed_while_it_waited_for_a_worker_never_starts(
    release: Callable[[], threading.Event],
) -> None:
    """Nobody joins: the task itself refuses to start late when a worker frees up."""
    unblock = release()
    ran: list[int] = []
    clock = FakeClock()
    with ThreadPoolExecutor(max_workers=1) as pool, use_clock(clock):
        pool.submit(unblock.wait)
        with hangguard.deadline(5, name="late"):
            group = hangguard.ThreadGroup("late", executor=pool)
            group.submit(ran.append, 1)
        clock.advance(10)  # the deadline passes while the task waits for the worker
        unblock.set()
        with pytest.raises(hangguard.DeadlineExceeded, match="no free worker"):
            group.join()
    assert ran == []


def test_the_shared_pool_grows_past_abandoned_threads(
    release: Callable[[], threading.Event],
) -> None:
    never = release()
    for i in range(40):  # more than the shared pool's size
        group = hangguard.ThreadGroup(f"stuck-{i}")
        group.submit(never.wait)
        with pytest.raises(hangguard.JoinTimeout):
            group.join(timeout=0.01)
    group = hangguard.ThreadGroup("after")
    group.submit(lambda: "ran")
    assert group.join(timeout=10) == ["ran"]


# --- context in the thread -----------------------------------------------------------------


def test_the_deadline_and_the_span_travel_into_the_thread(telemetry: Telemetry) -> None:
    clock = FakeClock()
    tracer = telemetry.provider.get_tracer("test")

    def inside() -> float:
        with tracer.start_as_current_span("inner"):
            return hangguard.remaining()

    with use_clock(clock), hangguard.deadline(30, name="outer"):
        clock.advance(10)
        group = hangguard.ThreadGroup("ctx")
        group.submit_named("probe", inside)
        assert group.join() == [20.0]
    inner = telemetry.span("inner")
    task = telemetry.span("task probe")
    assert inner.parent is not None and task.context is not None
    assert inner.parent.span_id == task.context.span_id
    group_span = telemetry.span("group ctx")
    assert task.parent is not None and group_span.context is not None
    assert task.parent.span_id == group_span.context.span_id


def test_checkpoint_raises_when_the_deadline_has_passed() -> None:
    clock = FakeClock()
    with use_clock(clock), hangguard.deadline(1, name="tight"):
        hangguard.checkpoint()  # time left: nothing happens
        clock.advance(2)
        with pytest.raises(hangguard.DeadlineExceeded) as info:
            hangguard.checkpoint()
    assert info.value.deadline_name == "tight"
    hangguard.checkpoint()  # no deadline, no group: nothing to check


# --- limit, serial, misuse ---------------------------------------------------------------


def _concurrency_probe() -> tuple[Callable[[int], int], list[int], list[int]]:
    lock = threading.Lock()
    running = [0]
    peak: list[int] = [0]
    order: list[int] = []

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(i)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i

    return work, peak, order


def test_limit_bounds_how_many_run_at_once() -> None:
    work, peak, _ = _concurrency_probe()
    group = hangguard.ThreadGroup("limited", limit=2)
    for i in range(8):
        group.submit(work, i)
    assert group.join() == list(range(8))
    assert peak[0] <= 2


def test_serial_mode_runs_one_at_a_time_in_submit_order_and_logs_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_SERIAL", "1")
    caplog.set_level(logging.INFO, logger="hangguard")
    work, peak, order = _concurrency_probe()
    group = hangguard.ThreadGroup("serial")
    for i in range(5):
        group.submit(work, i)
    assert group.join() == list(range(5))
    assert peak[0] == 1 and order == list(range(5))
    assert (
        sum(
            "serial: task" in r.getMessage() and "started" in r.getMessage() for r in caplog.records
        )
        == 5
    )


def test_misuse_is_refused_with_a_clear_error() -> None:
    async def coro() -> None: ...

    group = hangguard.ThreadGroup("misuse")
    with pytest.raises(TypeError, match="coroutine function"):
        group.submit(coro)
    with pytest.raises(TypeError, match="timeout"):
        group.join(timeout="soon")  # type: ignore[arg-type]
    group.submit(lambda: 1)
    assert group.join() == [1]  # the bad timeout left the group joinable
    with pytest.raises(RuntimeError, match="already joined"):
        group.join()
    with pytest.raises(RuntimeError, match="already joined"):
        group.submit(lambda: 2)


def test_joining_from_one_of_its_own_threads_is_an_error() -> None:
    group = hangguard.ThreadGroup("self")
    group.submit(lambda: group.join())
    (err,) = group.join(return_exceptions=True)
    assert isinstance(err, RuntimeError) and "its own threads" in str(err)


def test_with_block_joins_at_the_end_and_a_failing_body_cancels_the_rest(
    release: Callable[[], threading.Event],
) -> None:
    with hangguard.ThreadGroup("block") as group:
        group.submit(lambda: 1)
    never = release()
    ran: list[int] = []
    with pytest.raises(KeyError), hangguard.ThreadGroup("body", limit=1) as group:
        group.submit(never.wait)
        group.submit(ran.append, 1)  # queued behind the limit: cancelled
        raise KeyError("body")
    assert ran == []


# --- to_thread ---------------------------------------------------------------------------


async def test_to_thread_returns_the_result_and_carries_the_context(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")

    def inside(x: int) -> tuple[int, float, Any]:
        return x * 2, hangguard.remaining(), trace.get_current_span().get_span_context().span_id

    with tracer.start_as_current_span("caller") as caller:
        async with hangguard.deadline(30):
            value, left, span_id = await hangguard.to_thread(inside, 21)
    assert value == 42 and 0 < left <= 30
    assert span_id == caller.get_span_context().span_id


async def test_to_thread_ends_on_the_deadline_and_records_the_stuck_stack(
    telemetry: Telemetry, stuck_reader: Callable[[], bytes]
) -> None:
    tracer = telemetry.provider.get_tracer("test")
    started = time.monotonic()
    with (
        tracer.start_as_current_span("caller"),
        pytest.raises(hangguard.DeadlineExceeded) as info,
    ):
        async with hangguard.deadline(0.3, name="read"):
            await hangguard.to_thread(stuck_reader)
    assert time.monotonic() - started < 0.3 + MARGIN
    assert "abandoned" in str(info.value) and "in read" in str(info.value)
    assert info.value.deadline_name == "read"
    caller = telemetry.span("caller")
    (event,) = [e for e in caller.events if e.name == _semconv.EVENT_CANCELLED]
    assert event.attributes is not None
    assert event.attributes[_semconv.ATTR_CANCEL_REASON] == _semconv.CANCEL_DEADLINE
    assert str(event.attributes[_semconv.ATTR_TASK_STACK]).splitlines()[0].endswith("in read")
    assert telemetry.metric(_semconv.METRIC_THREADS_ABANDONED) == 1


async def test_to_thread_passes_on_a_parent_cancellation_and_the_thread_sees_it(
    release: Callable[[], threading.Event],
) -> None:
    entered = threading.Event()
    go_on = release()
    seen: list[BaseException] = []
    done = threading.Event()

    def worker() -> None:
        entered.set()
        go_on.wait(10)
        try:
            hangguard.checkpoint()
        except BaseException as exc:
            seen.append(exc)
        done.set()

    task = asyncio.ensure_future(hangguard.to_thread(worker))
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go_on.set()
    assert await asyncio.to_thread(done.wait, 10)
    assert isinstance(seen[0], hangguard.ThreadCancelled)


async def test_to_thread_refuses_a_coroutine_function() -> None:
    async def coro() -> None: ...

    with pytest.raises(TypeError, match="coroutine function"):
        await hangguard.to_thread(coro)


# --- the guide's examples --------------------------------------------------------------------


def _guide_section_examples() -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    section = text.split("## Sync code and threads", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


@pytest.mark.parametrize("index", range(5))
def test_the_guide_examples_of_sync_code_run_as_written(index: int) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    examples = _guide_section_examples()
    assert len(examples) == 5
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", examples[index]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert out.returncode == 0, out.stderr
    expected = {
        0: "['page 0', 'page 1', 'page 3']",
        1: "[332833500]",
        2: "REPORT.CSV",
        3: "['A', 'B']",
        4: "",
    }[index]
    assert expected in out.stdout
    if index == 4:
        assert "event loop blocked" in out.stderr


_seen_var: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="submitter")


def test_a_call_held_back_by_the_limit_runs_in_its_own_submits_context() -> None:
    second_queued = threading.Event()

    def first() -> str:
        _seen_var.set("first")  # in first's own copy: never the next call's
        assert second_queued.wait(10)
        return _seen_var.get()

    group = hangguard.ThreadGroup("ctx", limit=1)
    group.submit(first)
    group.submit(_seen_var.get)  # held back: first is running
    second_queued.set()
    assert group.join() == ["first", "submitter"]


def test_a_held_call_handed_on_as_the_join_gives_up_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first call ends and hands the held one on; the join times out before the hand-on
    # reaches the pool. The held call was counted cancelled by the join and then ran
    # anyway (and was counted done a second time). Handed on, it is now no longer queued:
    # the join waits for it like a running call, and it stops before its function runs.
    import sys

    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.2")
    entered, release, handed = threading.Event(), threading.Event(), threading.Event()

    def on_return(frame: Any, event: str, arg: object) -> Any:
        if event == "return":
            handed.set()
        return on_return

    def hold_the_hand_on(frame: Any, event: str, arg: object) -> Any:
        handing_on = event == "call" and frame.f_code.co_name == "_dispatch"
        if handing_on and frame.f_locals.get("direct") is False:
            entered.set()
            release.wait(30)
            return on_return
        return None

    ran: list[str] = []
    pool = ThreadPoolExecutor(2, initializer=sys.settrace, initargs=(hold_the_hand_on,))
    try:
        group = hangguard.ThreadGroup("handoff", limit=1, executor=pool)
        both_in = threading.Event()
        group.submit_named("first", lambda: (both_in.wait(30), ran.append("first")))
        group.submit_named("held", lambda: ran.append("held"))
        both_in.set()
        assert entered.wait(30), "the first call never handed the held one on"
        with pytest.raises(hangguard.JoinTimeout) as info:
            group.join(timeout=0.1)
        assert info.value.pending == ["held"]
        release.set()
        assert handed.wait(30)
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert ran == ["first"]
    assert group._pending == 0  # counted once


def test_a_direct_submit_racing_a_sibling_failure_is_counted_once(
    telemetry: Telemetry,
) -> None:
    # The second submit is held after it left the lock and before it reached the pool,
    # while the first call fails and fail-fast cancels the rest. That cancel used to take
    # it for a call that never started (one task span), and it then ran and was counted
    # again (a second span, and _pending at -1). Now it is cancelled once, before its
    # function runs.
    import sys

    fail_now, cancelled = threading.Event(), threading.Event()

    def on_return(frame: Any, event: str, arg: object) -> Any:
        if event == "return":
            cancelled.set()
        return on_return

    def watch_the_cancel(frame: Any, event: str, arg: object) -> Any:
        if event == "call" and frame.f_code.co_name == "_cancel_rest":
            return on_return
        return None

    def hold_the_submit(frame: Any, event: str, arg: object) -> Any:
        if event == "call" and frame.f_code.co_name == "_dispatch":
            slot = frame.f_locals.get("slot")
            if slot is not None and slot.index == 1:
                fail_now.set()
                assert cancelled.wait(30), "the sibling's failure never cancelled the rest"
        return None

    def first() -> None:
        assert fail_now.wait(30)
        raise ValueError("first failed")

    ran: list[str] = []
    pool = ThreadPoolExecutor(2, initializer=sys.settrace, initargs=(watch_the_cancel,))
    try:
        group = hangguard.ThreadGroup("race", return_exceptions=False, executor=pool)
        group.submit_named("first", first)
        sys.settrace(hold_the_submit)
        try:
            group.submit_named("second", lambda: ran.append("second"))
        finally:
            sys.settrace(None)
        with pytest.raises(ValueError, match="first failed"):
            group.join()
    finally:
        fail_now.set()
        pool.shutdown(wait=True)
    assert ran == []
    assert group._pending == 0
    assert len([s for s in telemetry.spans() if s.name == "task second"]) == 1
