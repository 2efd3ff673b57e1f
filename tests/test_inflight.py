"""The in-flight registry as the guarded scopes fill it: ops, sync ops, MCP calls, HTTP
requests; and the live snapshots a reader sends from it (on the injectable clock)."""

from __future__ import annotations

import asyncio
import gc
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import _inflight, _ps, _snapshots
from hangguard.http import AsyncDeadlineTransport, DeadlineTransport
from hangguard.testing import FakeClock, use_clock
from hangguard.testing.chaos import ChaosServer


def _mine(kind: str) -> list[_inflight.Record]:
    return [r for r in _inflight.snapshot() if r.kind == kind]


async def test_an_op_is_registered_while_it_runs_with_its_span_and_deadline(
    spans: InMemorySpanExporter,
) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    @hangguard.traced(name="fetch", budget=60)
    async def fetch() -> str:
        inside.set()
        await release.wait()
        return "ok"

    with use_clock(FakeClock()) as clock:
        task = asyncio.create_task(fetch())
        await inside.wait()
        assert isinstance(clock, FakeClock)
        clock.advance(15)
        (record,) = _mine(_inflight.OP)
        release.set()
        assert await task == "ok"
    assert record.name == "fetch" and record.state == _inflight.RUNNING
    assert record.elapsed_s == pytest.approx(15)
    assert record.budget_left_s == pytest.approx(45)
    (span,) = [s for s in spans.get_finished_spans() if s.name == "fetch"]
    assert span.context is not None
    assert record.trace_id == format(span.context.trace_id, "032x")
    assert record.span_id == format(span.context.span_id, "016x")
    # Suspended in the await: the stack names the line it waits on.
    assert record.stack[0].function == "wait"  # asyncio.Event.wait, innermost
    assert ("fetch", "await release.wait()") in [(f.function, f.source) for f in record.stack]
    assert _mine(_inflight.OP) == []  # ended: gone


async def test_a_loop_blocked_inside_an_op_shows_the_loop_threads_stack() -> None:
    seen: list[_inflight.Record] = []
    done = threading.Event()

    def look() -> None:
        # Read until the loop thread is seen inside the blocking call (bounded).
        for _ in range(100_000):
            (record,) = _mine(_inflight.OP)
            if ("blocking", "done.wait(30)") in [(f.function, f.source) for f in record.stack]:
                seen.append(record)
                break
        done.set()

    @hangguard.traced(name="blocking", budget=math.inf)
    async def blocking() -> None:
        threading.Thread(target=look).start()
        done.wait(30)

    await blocking()
    (record,) = seen  # the task is the running one: its loop thread's stack is shown
    assert record.budget_left_s == math.inf
    assert record.stack[0].function == "wait"


def test_a_sync_op_and_nesting() -> None:
    seen: list[list[_inflight.Record]] = []

    @hangguard.guarded_op(budget=30)
    class Outer:
        def call(self) -> None:
            Inner().call()

    @hangguard.guarded_op(budget=5)
    class Inner:
        def call(self) -> None:
            seen.append(_mine(_inflight.OP))

    Outer().call()
    ((outer, inner),) = seen
    assert (outer.name, inner.name) == ("Outer", "Inner")
    assert inner.parent_id == outer.id and outer.parent_id is None
    assert inner.budget_left_s <= 5 < outer.budget_left_s
    # Read on its own thread here: the stack goes down to the reading line itself.
    assert ("call", "seen.append(_mine(_inflight.OP))") in [
        (f.function, f.source) for f in inner.stack
    ]


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """A loopback HTTP server that accepts, reads the request, and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    got = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conns.append(conn)
        conn.recv(65536)
        got.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    server.close()
    for c in conns:
        c.close()


def test_a_sync_http_request_on_the_wire_is_registered(
    silent_server: tuple[int, threading.Event], spans: InMemorySpanExporter
) -> None:
    port, got = silent_server
    seen: list[_inflight.Record] = []

    def look() -> None:
        got.wait(10)
        seen.extend(_mine(_inflight.HTTP))

    reader = threading.Thread(target=look)
    reader.start()
    with (
        httpx.Client(transport=DeadlineTransport(retry=1)) as client,
        pytest.raises((httpx.TimeoutException, hangguard.DeadlineExceeded)),
        hangguard.deadline(3),
    ):
        client.get(f"http://127.0.0.1:{port}/slow")
    reader.join()
    (record,) = seen
    assert record.name == f"HTTP GET http://127.0.0.1:{port}"
    assert 0 < record.budget_left_s <= 3
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET"]
    assert span.context is not None
    assert record.span_id == format(span.context.span_id, "016x")  # the request's own span
    assert _mine(_inflight.HTTP) == []


async def test_an_async_http_request_is_registered(
    silent_server: tuple[int, threading.Event],
) -> None:
    port, got = silent_server
    async with httpx.AsyncClient(transport=AsyncDeadlineTransport(retry=1)) as client:
        call = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.to_thread(got.wait, 10)
        (record,) = _mine(_inflight.HTTP)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert record.stack  # where the request waits
    assert _mine(_inflight.HTTP) == []


async def test_an_mcp_call_is_registered_under_its_op(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client:

        @hangguard.traced(name="research", budget=20)
        async def research() -> None:
            await client.call_tool("hang")

        task = asyncio.create_task(research())
        await chaos.wait_for("started", "hang")
        records = _inflight.snapshot()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (op,) = [r for r in records if r.kind == _inflight.OP]
    (call,) = [r for r in records if r.kind == _inflight.MCP]
    assert call.parent_id == op.id and call.name.endswith(" hang")
    assert call.budget_left_s <= 20
    assert [r for r in _inflight.snapshot() if r.kind == _inflight.MCP] == []


def test_snapshots_of_open_work_are_sent_once_per_threshold_and_capped(
    spans: InMemorySpanExporter,
) -> None:
    tracer = hangguard._spans.get_tracer()
    assert tracer is not None
    flushes: list[float] = []
    with use_clock(FakeClock()) as clock:
        assert isinstance(clock, FakeClock)
        snap = _snapshots.Snapshotter(10.0, flushes.append)
        span = tracer.start_span("stuck-op")
        outer = _inflight.Entry(_inflight.OP, "stuck-op", span=span, deadline=clock() + 30)
        ctx = span.get_span_context()
        outer.trace_id, outer.span_id = ctx.trace_id, ctx.span_id
        leaf = _inflight.Entry(
            _inflight.THREAD,
            "recv",
            parent=outer,
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            where=lambda: (_inflight.Frame("recv", "app.py", 7, "sock.recv(1)"),),
        )
        _inflight.add(outer)
        _inflight.add(leaf)
        try:
            snap.tick()
            assert spans.get_finished_spans() == ()  # not open long enough yet
            clock.advance(12)
            snap.tick()
            snap.tick()  # the same entry again, too soon: nothing more
            (sent,) = spans.get_finished_spans()
            clock.advance(10)
            snap.tick()
            assert len(spans.get_finished_spans()) == 2
        finally:
            _inflight.discard(leaf)
            _inflight.discard(outer)
            span.end()
    attrs = dict(sent.attributes or {})
    assert sent.name == "snapshot recv"  # the leaf only: its stack is where it is stuck
    assert sent.parent is not None and sent.parent.span_id == ctx.span_id
    assert sent.context is not None and sent.context.trace_id == ctx.trace_id
    assert attrs["hangguard.snapshot.kind"] == "thread"
    assert attrs["hangguard.snapshot.elapsed_s"] == pytest.approx(12)
    assert attrs["hangguard.snapshot.budget_left_s"] == pytest.approx(18)
    assert attrs["hangguard.snapshot.stack"] == "app.py:7 in recv: sock.recv(1)"
    assert attrs["hangguard.snapshot.path"] == "op stuck-op > thread recv"
    assert flushes == [_snapshots.FLUSH_BOUND, _snapshots.FLUSH_BOUND]


def test_the_per_minute_cap_holds_back_the_rest(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only this test's entries: work an earlier test left running would take a share.
    monkeypatch.setattr(_inflight, "_entries", {})
    # And only this test's snapshotter: a watcher an earlier test started would tick too,
    # on the same entries and the same clock.
    watcher = _ps.watcher()
    if watcher is not None:
        monkeypatch.setattr(watcher, "_tick", None)
    tracer = hangguard._spans.get_tracer()
    assert tracer is not None
    with use_clock(FakeClock()) as clock:
        assert isinstance(clock, FakeClock)
        snap = _snapshots.Snapshotter(1.0, lambda s: None)
        span = tracer.start_span("fan-out")
        ctx = span.get_span_context()
        many = [
            _inflight.add(
                _inflight.Entry(_inflight.OP, f"op{i}", trace_id=ctx.trace_id, span_id=ctx.span_id)
            )
            for i in range(_snapshots.PER_MINUTE + 5)
        ]
        capped = _snapshots.totals["capped"]

        def mine() -> list[object]:
            # Spans other threads end meanwhile land in the same exporter.
            return [
                s
                for s in spans.get_finished_spans()
                if s.parent is not None and s.parent.span_id == ctx.span_id
            ]

        try:
            clock.advance(2)
            snap.tick()
            assert len(mine()) == _snapshots.PER_MINUTE
            assert _snapshots.totals["capped"] - capped == 5
            clock.advance(61)  # a new minute: the rest go out
            snap.tick()
            assert len(mine()) == 2 * _snapshots.PER_MINUTE
        finally:
            for e in many:
                _inflight.discard(e)
            span.end()


def test_snapshots_off() -> None:
    assert _snapshots.ticker(math.inf, None) is None
    assert _snapshots.Snapshotter(math.inf).tick() is None


def _group_entries(name: str) -> list[_inflight.Entry]:
    return [e for e in _inflight.entries() if e.kind == _inflight.GROUP and e.name == name]


async def test_a_task_group_dropped_without_join_loses_its_entry() -> None:
    finished = asyncio.get_running_loop().create_future()

    async def quick() -> str:
        task = asyncio.current_task()
        assert task is not None
        # Runs after the group's own done callbacks (added at submit, run in order).
        task.add_done_callback(lambda _: finished.set_result(None))
        return "done"

    group = hangguard.TaskGroup("dropped-unjoined")
    group.submit_named("quick", quick)
    assert len(_group_entries("dropped-unjoined")) == 1
    await finished
    del group  # never joined
    gc.collect()
    assert _group_entries("dropped-unjoined") == []


def test_a_thread_group_dropped_without_join_loses_its_entry() -> None:
    pool = ThreadPoolExecutor(1)
    group = hangguard.ThreadGroup("dropped-threads", executor=pool)
    group.submit(time.perf_counter)
    assert len(_group_entries("dropped-threads")) == 1
    pool.shutdown(wait=True)  # its worker has ended: nothing of the group runs
    del group
    gc.collect()
    assert _group_entries("dropped-threads") == []


async def test_a_live_group_keeps_its_entry_and_lists_its_tasks() -> None:
    # Held weakly, the group's listing still works while the group lives.
    release = asyncio.Event()

    async def waits() -> None:
        await release.wait()

    group = hangguard.TaskGroup("kept")
    group.submit_named("waits", waits)
    gc.collect()
    (entry,) = _group_entries("kept")
    assert entry.children is not None
    assert [kid.name for kid in entry.children()] == ["waits"]
    release.set()
    await group.join()
    assert _group_entries("kept") == []
