"""guarded_op on sync ops (flowllm's BaseOp pattern), on real threads and real blocking calls.

``SyncBaseOp`` below has the shape of flowllm's ``BaseOp``: ``call()`` runs ``execute()``,
``submit_task`` puts the call on a thread pool (or, with multithreading off, runs it
inline) and ``join_task(task_desc=None)`` flattens list results and drops falsy ones.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import _semconv

MARGIN = 1.5

POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="op-pool")


class SyncBaseOp:
    """flowllm's BaseOp thread fan-out, with the inline path storing its results."""

    def __init__(self, enable_multithread: bool = True) -> None:
        self.enable_multithread = enable_multithread
        self.task_list: list[Any] = []

    def execute(self) -> Any:
        raise NotImplementedError

    def call(self) -> Any:
        return self.execute()

    def submit_task(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> SyncBaseOp:
        if self.enable_multithread:
            self.task_list.append(POOL.submit(fn, *args, **kwargs))
        else:
            self.task_list.append(fn(*args, **kwargs))
        return self

    def join_task(self, task_desc: str | None = None) -> list[Any]:
        result: list[Any] = []
        for task in self.task_list:
            value = task.result() if isinstance(task, Future) else task
            if value:
                if isinstance(value, list):
                    result.extend(value)
                else:
                    result.append(value)
        self.task_list.clear()
        return result


def shaped(i: int) -> Any:
    """Lists, falsy values and plain values: what the class's join shapes."""
    return [[i, i * 10], 0, None, f"v{i}", []][i % 5]


class FanOutOp(SyncBaseOp):
    def execute(self) -> Any:
        for i in range(10):
            self.submit_task(shaped, i)
        return self.join_task()


@hangguard.guarded_op
class GuardedFanOutOp(FanOutOp):
    pass


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    with hangguard.use_providers(tracer_provider=provider):
        yield exp


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


@pytest.fixture
def stuck_reader(blackhole: str) -> Iterator[Callable[[], bytes]]:
    host, port = blackhole.split(":")
    socks: list[socket.socket] = []
    lock = threading.Lock()

    def read() -> bytes:
        s = socket.create_connection((host, int(port)))
        with lock:
            socks.append(s)
        return s.recv(1)

    yield read
    with lock:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.parametrize("multithread", [True, False], ids=["threads", "inline"])
def test_the_class_own_result_shaping_is_kept(multithread: bool) -> None:
    plain = FanOutOp(enable_multithread=multithread).call()
    guarded = GuardedFanOutOp(enable_multithread=multithread).call()
    assert guarded == plain == [0, 0, "v3", 5, 50, "v8"]


def test_submit_task_returns_what_the_class_returns() -> None:
    @hangguard.guarded_op
    class ChainOp(SyncBaseOp):
        def execute(self) -> Any:
            assert self.submit_task(shaped, 3) is self
            return self.join_task()

    assert ChainOp().call() == ["v3"]


def test_each_run_has_a_span_and_its_threads_are_children(
    exporter: InMemorySpanExporter,
) -> None:
    GuardedFanOutOp().call()
    spans = list(exporter.get_finished_spans())
    op = only(spans, "GuardedFanOutOp")
    group = only(spans, "group GuardedFanOutOp")
    tasks = [s for s in spans if s.name.startswith("task shaped[")]
    assert len(tasks) == 10
    assert group.parent is not None and op.context is not None
    assert group.parent.span_id == op.context.span_id
    assert all(t.parent is not None and t.parent.span_id == group.context.span_id for t in tasks)  # type: ignore[union-attr]


def test_a_hanging_thread_is_bounded_by_the_env_budget_and_its_stack_is_in_the_trace(
    monkeypatch: pytest.MonkeyPatch,
    exporter: InMemorySpanExporter,
    stuck_reader: Callable[[], bytes],
) -> None:
    monkeypatch.setenv("HANGGUARD_BUDGETS", "HangingSearchOp=0.5")

    @hangguard.guarded_op
    class HangingSearchOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(shaped, 3)
            self.submit_task(stuck_reader)
            return self.join_task()

    started = time.monotonic()
    with pytest.raises(hangguard.JoinTimeout) as info:
        HangingSearchOp().call()
    assert time.monotonic() - started < 0.5 + MARGIN
    assert info.value.deadline_name == "HangingSearchOp"
    assert info.value.results[0] == "v3"
    spans = list(exporter.get_finished_spans())
    op = only(spans, "HangingSearchOp")
    assert op.attributes is not None and op.attributes[_semconv.ATTR_TIMEOUT_S] == 0.5
    stuck = only(spans, f"task {stuck_reader.__qualname__}[1]")
    (event,) = [e for e in stuck.events if e.name == _semconv.EVENT_CANCELLED]
    assert event.attributes is not None
    assert event.attributes[_semconv.ATTR_CANCEL_REASON] == _semconv.CANCEL_DEADLINE
    assert str(event.attributes[_semconv.ATTR_TASK_STACK]).splitlines()[0].endswith("in read")


def test_join_task_timeout_is_capped_by_the_op_deadline_and_its_own_timeout_works(
    release_event: threading.Event,
) -> None:
    @hangguard.guarded_op(budget=60)
    class WaitOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(release_event.wait)
            return self.join_task("waiting", timeout=0.2)

    started = time.monotonic()
    with pytest.raises(hangguard.JoinTimeout) as info:
        WaitOp().call()
    assert time.monotonic() - started < 0.2 + MARGIN
    assert info.value.deadline_name == "join WaitOp"


@pytest.fixture
def release_event() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_return_exceptions_puts_the_failure_in_place_through_the_class_join(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail() -> None:
        raise ValueError("bad")

    @hangguard.guarded_op
    class MixedOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(shaped, 3)
            self.submit_task(fail)
            return self.join_task(return_exceptions=True)

    result = MixedOp().call()
    assert result[0] == "v3" and isinstance(result[1], ValueError)
    assert len([r for r in caplog.records if r.name == "hangguard" and r.exc_info]) == 1


def test_the_first_failure_is_raised_by_default() -> None:
    def fail() -> None:
        raise ValueError("bad")

    @hangguard.guarded_op
    class FailOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(fail)
            return self.join_task()

    with pytest.raises(ValueError, match="bad"):
        FailOp().call()


def test_threads_see_the_op_deadline() -> None:
    @hangguard.guarded_op(budget=30)
    class DeadlineOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(hangguard.remaining)
            return self.join_task()

    (left,) = DeadlineOp().call()
    assert 0 < left <= 30


def test_a_run_that_forgets_join_task_is_joined_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran = threading.Event()

    @hangguard.guarded_op
    class ForgetfulOp(SyncBaseOp):
        def execute(self) -> Any:
            self.submit_task(ran.set)
            return "done"

    assert ForgetfulOp().call() == "done"
    assert ran.is_set()
    assert any("without join_task" in r.getMessage() for r in caplog.records)


def test_a_class_with_only_a_sync_execute_is_guarded() -> None:
    @hangguard.guarded_op(budget=5)
    class PlainOp:
        def execute(self) -> float:
            return hangguard.remaining()

    assert 0 < PlainOp().execute() <= 5


def test_an_async_op_keeps_working_and_gets_no_sync_side() -> None:
    @hangguard.guarded_op
    class AsyncOnlyOp:
        async def async_execute(self) -> int:
            return 1

    assert not hasattr(AsyncOnlyOp, "submit_task")


def test_a_class_with_no_entry_point_is_refused() -> None:
    with pytest.raises(TypeError, match="neither"):

        @hangguard.guarded_op
        class NothingOp:
            pass


def test_serial_mode_logs_sync_op_tasks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_SERIAL", "1")
    caplog.set_level(logging.INFO, logger="hangguard")
    assert GuardedFanOutOp().call() == [0, 0, "v3", 5, 50, "v8"]
    assert sum("serial: task" in r.getMessage() for r in caplog.records) == 20
