"""The fault matrix: every way an MCP server can fail, on every transport it applies to.

Each case checks that the call ends within its budget plus 0.5 s, with the right
exception, that the ``execute_tool`` span says what happened (status ERROR and
``error.type``), that no task, socket or child process is left behind, and, where the
transport allows, that the server-side handler was cancelled. These run on the real
clock against real servers: budgets are small (1 s) and the margins wide.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import (
    Blackhole,
    ChaosServer,
    HttpFault,
    closed_port_url,
    stdio_command,
)
from mcp_helpers import ChaosProcess, LeakCheck, child_pids, eventually, pid_alive, within

BUDGET = 1.0
# The client timeout of tests whose claim is not about it (a retry, a typed error): far
# more than a loaded machine needs, and more than within()'s bound, so a hang still fails.
ROOMY = 10.0
ALL = ["http", "http-legacy", "sse", "stdio"]
HTTP = ["http", "http-legacy", "sse"]
DEAD = {"GET", "tools/call", "tools/list", "notifications/cancelled"}

pytestmark = pytest.mark.usefixtures("no_backoff")


class Target:
    """One transport under test: how to reach it, and its server's event log (if any)."""

    def __init__(self, kind: str, chaos: ChaosServer, chaos_sse: ChaosServer) -> None:
        self.kind = kind
        self.server: ChaosServer | None = None
        self.kwargs: dict[str, Any] = {}
        if kind == "stdio":
            self.where: Any = stdio_command()
            # Starting a Python interpreter with the mcp stack takes a while.
            self.kwargs["connect_timeout"] = 60
        else:
            self.server = chaos_sse if kind == "sse" else chaos
            self.where = self.server.url
            if kind == "http-legacy":
                self.kwargs["protocol"] = "legacy"

    @property
    def port(self) -> int | None:
        return self.server.port if self.server is not None else None

    def client(self, **kwargs: Any) -> hangguard.mcp.McpClient:
        return hangguard.mcp.McpClient(self.where, **{**self.kwargs, **kwargs})


@pytest.fixture(params=ALL)
def target(request: pytest.FixtureRequest, chaos: ChaosServer, chaos_sse: ChaosServer) -> Target:
    return Target(request.param, chaos, chaos_sse)


def tool_span(spans: InMemorySpanExporter, tool: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == f"execute_tool {tool}"]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def assert_failed(span: ReadableSpan, error_type: str) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == error_type


def retry_events(span: ReadableSpan) -> int:
    return sum(1 for e in span.events if e.name == "hangguard.retry")


def resend_rules(span: ReadableSpan, *, refused: bool = False) -> list[object]:
    """The rules of the span's resend (or refused resend) events, in order."""
    name = "hangguard.mcp.resend_refused" if refused else "hangguard.mcp.resend"
    return [e.attributes["hangguard.mcp.resend.rule"] for e in span.events if e.name == name]


@pytest.fixture
async def leaks(target: Target) -> AsyncIterator[LeakCheck]:
    check = LeakCheck(target.port)
    yield check
    await check.verify()


# --- the tool misbehaves ---------------------------------------------------------------


@pytest.mark.parametrize(("tool", "args"), [("hang", {}), ("sleep", {"seconds": 30})])
async def test_hang_and_slow_end_at_the_timeout(
    target: Target,
    leaks: LeakCheck,
    spans: InMemorySpanExporter,
    tool: str,
    args: dict[str, Any],
) -> None:
    async with target.client(timeout=BUDGET) as client:
        pid = client.server_pid
        with within(BUDGET) as elapsed, pytest.raises(hangguard.DeadlineExceeded) as info:
            await client.call_tool(tool, args)
        assert elapsed() >= BUDGET * 0.9
    assert tool in str(info.value) and "timeout" in str(info.value)
    span = tool_span(spans, tool)
    assert_failed(span, "timeout")
    assert any(e.name == "hangguard.deadline_exceeded" for e in span.events)
    if target.server is not None:
        await target.server.wait_for("cancelled", tool)
    if pid is not None:
        await eventually(lambda: not pid_alive(pid), f"stdio server {pid} reaped")


async def test_raise_is_a_call_error_and_not_retried(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    async with target.client(timeout=ROOMY) as client:
        with within(BUDGET), pytest.raises(hangguard.McpCallError) as info:
            await client.call_tool("raise", {"code": -32602, "message": "bad query"})
    assert info.value.code == -32602
    assert info.value.tool == "raise" and "bad query" in str(info.value)
    span = tool_span(spans, "raise")
    assert_failed(span, "-32602")
    assert retry_events(span) == 0
    if target.server is not None:
        assert target.server.recorder.count("started", "raise") == 1


async def test_is_error_is_returned_by_default_and_raised_on_request(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    async with target.client(timeout=ROOMY) as client:
        with within(BUDGET):
            result = await client.call_tool("is_error", {"message": "no such company"})
        assert result.is_error
        with within(BUDGET), pytest.raises(hangguard.McpToolError) as info:
            await client.call_tool("is_error", {"message": "no such company"}, raise_on_error=True)
    assert info.value.result is not None and "no such company" in str(info.value)
    returned, raised = (s for s in spans.get_finished_spans() if s.name == "execute_tool is_error")
    assert_failed(returned, "tool_error")
    assert_failed(raised, "tool_error")
    assert retry_events(raised) == 0


# --- the server, or what stands in front of it, misbehaves -----------------------------


async def connect_and_call(target: Target, **kwargs: Any) -> None:
    """Connect inside the call (no ``async with``), so the call's span sees the failure."""
    client = target.client(**kwargs)
    try:
        await client.call_tool("echo", {"text": "hello"})
    finally:
        await client.aclose()


def faults(target: Target, method: str | None = None) -> int:
    assert target.server is not None
    events = target.server.recorder.events
    return sum(1 for e in events if e.kind == "fault" and (method is None or e.tool == method))


@pytest.mark.parametrize("target", HTTP, indirect=True)
@pytest.mark.parametrize("fault", ["html", "404"])
async def test_wrong_content_type_and_404_fail_the_connect_without_retry(
    target: Target, spans: InMemorySpanExporter, fault: str
) -> None:
    assert target.server is not None
    leaks = LeakCheck(target.port)
    # SSE connects with a GET; streamable HTTP with POSTs.
    methods = {"GET"} if target.kind == "sse" else None
    kind = "html" if fault == "html" else "status"
    target.server.fault = HttpFault(kind, status=404, methods=methods)
    with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
        await connect_and_call(target, timeout=ROOMY)
    await leaks.verify()
    message = str(info.value)
    assert target.server.url in message
    assert ("text/html" in message) if fault == "html" else ("404" in message)
    span = tool_span(spans, "echo")
    assert_failed(span, "hangguard.McpConnectError" if fault == "html" else "404")
    assert retry_events(span) == 0
    # One connect attempt: streamable HTTP tries server/discover, then initialize.
    assert faults(target) <= 2


@pytest.mark.parametrize("target", HTTP, indirect=True)
@pytest.mark.parametrize("fault", ["html", "404"])
async def test_wrong_content_type_and_404_mid_session_are_not_retried(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter, fault: str
) -> None:
    assert target.server is not None
    async with target.client(timeout=ROOMY) as client:
        kind = "html" if fault == "html" else "status"
        target.server.fault = HttpFault(kind, status=404, methods={"tools/call"})
        with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
            await client.call_tool("echo", {"text": "x"})
        target.server.fault = None
    assert info.value.tool == "echo"
    assert retry_events(tool_span(spans, "echo")) == 0
    # A 404 to a request naming a session says the server forgot it: one re-send on a
    # new session (the modern protocol keeps none), and the second 404 is the error.
    resent = fault == "404" and target.kind != "http"
    assert faults(target, "tools/call") == (2 if resent else 1)


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_502_is_retried_then_raised(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    assert target.server is not None
    async with target.client(timeout=ROOMY, retry=3) as client:
        await client.list_tools()  # echo is read-only: a 502 may hide a run, echo may re-run
        target.server.fault = HttpFault("status", status=502, methods={"tools/call"})
        with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
            await client.call_tool("echo", {"text": "x"})
        target.server.fault = None
    assert "502" in str(info.value)
    span = tool_span(spans, "echo")
    assert_failed(span, "502")
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 502
    assert retry_events(span) == 2
    assert resend_rules(span) == ["read_only_hint"] * 3
    assert faults(target, "tools/call") == 3


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_502_of_a_tool_not_marked_idempotent_is_not_retried(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    # A gateway's 502 cannot say whether the server ran the request.
    assert target.server is not None
    async with target.client(timeout=BUDGET, retry=3) as client:
        await client.list_tools()
        target.server.fault = HttpFault("status", status=502, methods={"tools/call"})
        with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
            await client.call_tool("flaky", {"failures": 0})
        target.server.fault = None
    assert "not retried: tool 'flaky'" in str(info.value) and "502" in str(info.value)
    assert info.value.tool == "flaky"
    span = tool_span(spans, "flaky")
    assert_failed(span, "502")
    assert retry_events(span) == 0
    assert resend_rules(span, refused=True) == ["not_idempotent"]
    assert faults(target, "tools/call") == 1


async def test_concurrent_calls_all_fail_fast_when_the_sse_writer_dies(
    chaos_sse: ChaosServer,
) -> None:
    # Over SSE the SDK's writer dies at the first failed POST: the calls queued behind
    # it must fail as well, not wait for their deadlines.
    async with hangguard.mcp.McpClient(chaos_sse.url, timeout=30, retry=1) as client:
        chaos_sse.fault = HttpFault("status", status=503, methods={"tools/call"})
        with within(0.5):  # far less than the 30 s they would wait
            results = await asyncio.gather(
                *(client.call_tool("echo", {"text": str(i)}) for i in range(5)),
                return_exceptions=True,
            )
        chaos_sse.fault = None
    assert all(isinstance(r, hangguard.McpConnectError) for r in results), results


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_503_then_ok_succeeds_after_retries(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    assert target.server is not None
    async with target.client(timeout=ROOMY, retry=3) as client:
        target.server.fault = HttpFault("status", status=503, methods={"tools/call"}, first=2)
        with within(BUDGET):
            result = await client.call_tool("echo", {"text": "third time"})
    assert result.structured_content == {"result": "third time"}
    span = tool_span(spans, "echo")
    assert span.status.status_code is not StatusCode.ERROR
    assert retry_events(span) == 2
    assert faults(target, "tools/call") == 2


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_503_then_ok_at_connect(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    assert target.server is not None
    methods = {"GET"} if target.kind == "sse" else None
    target.server.fault = HttpFault("status", status=503, methods=methods, first=2)
    with within(BUDGET):
        await connect_and_call(target, timeout=ROOMY, retry=3)
    assert faults(target) == 2


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_an_http_error_during_the_handshake_fails_the_connect_at_once(
    target: Target, leaks: LeakCheck
) -> None:
    assert target.server is not None
    handshake = {"server/discover", "initialize"}
    target.server.fault = HttpFault("status", status=503, methods=handshake)
    # SSE included: there the SDK's writer dies on the failed POST, and the handshake
    # would otherwise wait for an answer until connect_timeout.
    with within(BUDGET), pytest.raises(hangguard.McpConnectError, match="503"):
        async with target.client(connect_timeout=10, retry=1):
            pass


async def test_connection_closed_mid_response_is_retried_then_raised(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    leaks = LeakCheck(chaos.port)
    async with hangguard.mcp.McpClient(chaos.url, timeout=ROOMY, retry=2) as client:
        await client.list_tools()  # echo is read-only, so safe to send again
        chaos.fault = HttpFault("close_mid_response", methods={"tools/call"})
        with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
            await client.call_tool("echo", {"text": "x"})
        chaos.fault = None
        # The next call reconnects and works.
        assert (await client.call_tool("echo", {"text": "again"})).structured_content == {
            "result": "again"
        }
    await leaks.verify()
    assert "connection was lost" in str(info.value)
    failed = next(s for s in spans.get_finished_spans() if s.name == "execute_tool echo")
    assert_failed(failed, "hangguard.McpConnectError")
    assert faults(Target("http", chaos, chaos), "tools/call") == 2


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_closed_port(kind: str, spans: InMemorySpanExporter) -> None:
    url = closed_port_url(path="/sse" if kind == "sse" else "/mcp")
    leaks = LeakCheck()
    with within(BUDGET), pytest.raises(hangguard.McpConnectError) as info:
        client = hangguard.mcp.McpClient(url, timeout=ROOMY, retry=3)
        try:
            await client.call_tool("echo")
        finally:
            await client.aclose()
    await leaks.verify()
    assert "refused" in str(info.value) and url in str(info.value)
    span = tool_span(spans, "echo")
    assert_failed(span, "hangguard.McpConnectError")
    assert retry_events(span) == 2


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_blackhole_fails_the_connect_at_connect_timeout(kind: str) -> None:
    with Blackhole(path="/sse" if kind == "sse" else "/mcp") as hole:
        leaks = LeakCheck(hole.port)
        with within(BUDGET) as elapsed, pytest.raises(hangguard.McpConnectError) as info:
            async with hangguard.mcp.McpClient(hole.url, connect_timeout=BUDGET):
                pass
        assert elapsed() >= BUDGET * 0.9
        await leaks.verify()
    assert "connect_timeout" in str(info.value)


async def test_blackhole_within_a_call_is_a_connect_error_on_the_span(
    spans: InMemorySpanExporter,
) -> None:
    with Blackhole() as hole:
        leaks = LeakCheck(hole.port)
        with within(BUDGET), pytest.raises(hangguard.McpConnectError):
            client = hangguard.mcp.McpClient(hole.url, timeout=30, connect_timeout=BUDGET, retry=1)
            try:
                await client.call_tool("echo")
            finally:
                await client.aclose()
        await leaks.verify()
    assert_failed(tool_span(spans, "echo"), "hangguard.McpConnectError")


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_server_never_answering_mid_session_ends_at_the_timeout(
    target: Target, leaks: LeakCheck, spans: InMemorySpanExporter
) -> None:
    assert target.server is not None
    methods = {"tools/call"}
    async with target.client(timeout=BUDGET) as client:
        target.server.fault = HttpFault("never_answer", methods=methods)
        with within(BUDGET), pytest.raises(hangguard.DeadlineExceeded):
            await client.call_tool("echo", {"text": "x"})
        target.server.fault = None
    assert_failed(tool_span(spans, "echo"), "timeout")


@pytest.mark.parametrize("target", HTTP, indirect=True)
async def test_concurrent_calls_to_a_server_that_stopped_answering_all_end_on_time(
    target: Target, leaks: LeakCheck
) -> None:
    # Each timed-out call makes the SDK send a cancellation notice; before 2026-07-28
    # (and over SSE) its writer waits for each such POST, which this server never
    # answers. The next caller's own notice must not wait behind it.
    assert target.server is not None
    async with target.client() as client:
        # Dead to everything, the client's cancellation notices included.
        target.server.fault = HttpFault("never_answer", methods=DEAD)

        async def call(budget: float) -> None:
            with within(budget), pytest.raises(hangguard.DeadlineExceeded):
                await client.call_tool("echo", {"text": "x"}, timeout=budget)

        async with asyncio.TaskGroup() as tg:
            for budget in (0.3, 0.6, 0.9):
                tg.create_task(call(budget))
        target.server.fault = None


async def test_http_server_killed_mid_call(spans: InMemorySpanExporter) -> None:
    async with ChaosProcess() as server:
        leaks = LeakCheck(server.port)
        async with hangguard.mcp.McpClient(server.url, timeout=5, retry=1) as client:
            call = asyncio.create_task(client.call_tool("hang"))
            await server.recorder.wait_for("started", "hang", timeout=30)
            with within(BUDGET):
                server.kill()
                with pytest.raises(hangguard.McpConnectError) as info:
                    await call
        await leaks.verify()
    assert "lost" in str(info.value) and info.value.tool == "hang"
    assert_failed(tool_span(spans, "hang"), "hangguard.McpConnectError")


async def test_stdio_server_killed_mid_call(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    log = tmp_path / "server-stderr.jsonl"
    leaks = LeakCheck()
    with log.open("w") as stderr:
        client = hangguard.mcp.McpClient(
            stdio_command("--announce"), connect_timeout=60, timeout=5, retry=1, stderr=stderr
        )
        async with client:
            pid = client.server_pid
            assert pid is not None and pid_alive(pid)
            call = asyncio.create_task(client.call_tool("hang"))
            # The server announces each handler it starts on its stderr.
            await eventually(lambda: '"tool": "hang"' in log.read_text(), "hang started", 30)
            with within(BUDGET):
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(hangguard.McpConnectError) as info:
                    await call
    await leaks.verify()
    assert "lost" in str(info.value)
    assert_failed(tool_span(spans, "hang"), "hangguard.McpConnectError")


# --- stdio servers that never answer ---------------------------------------------------


async def test_stdio_server_that_never_answers_is_killed_within_connect_timeout() -> None:
    leaks = LeakCheck()
    with within(BUDGET) as elapsed, pytest.raises(hangguard.McpConnectError) as info:
        async with hangguard.mcp.McpClient(
            stdio_command("--fault", "never-answer"), connect_timeout=BUDGET
        ):
            pass
    assert elapsed() >= BUDGET * 0.9
    # It ignores SIGTERM and the end of its input: only the SIGKILL of its group ends it.
    await leaks.verify()
    assert "connect_timeout" in str(info.value) and "--fault never-answer" in str(info.value)


async def test_stdio_connect_under_nested_deadlines_reaps_the_child() -> None:
    leaks = LeakCheck()
    with within(0.5), pytest.raises(hangguard.DeadlineExceeded) as info:
        async with (
            hangguard.deadline(0.6, name="outer"),
            hangguard.deadline(0.5, name="inner"),
            hangguard.mcp.McpClient(stdio_command("--fault", "never-answer"), connect_timeout=30),
        ):
            pass
    assert info.value.deadline_name == "inner"
    await leaks.verify()


async def test_stdio_connect_cancelled_twice_still_reaps_the_child() -> None:
    leaks = LeakCheck()
    client = hangguard.mcp.McpClient(stdio_command("--fault", "never-answer"), connect_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await eventually(lambda: bool(set(child_pids()) - leaks.children), "the server was spawned")
    connecting.cancel()
    await asyncio.sleep(0)  # one loop turn: the first cancellation is being handled
    connecting.cancel()
    with within(BUDGET), pytest.raises(asyncio.CancelledError):
        await connecting
    await leaks.verify()


async def test_an_sse_abort_leaves_no_cancellation_behind(chaos_sse: ChaosServer) -> None:
    # A failed POST cancels the caller to end its wait; that cancel must be taken back,
    # or it would surface at the caller's next await (or confuse an enclosing timeout).
    async def call_then_await() -> int:
        with pytest.raises(hangguard.McpConnectError):
            await client.call_tool("echo", {"text": "x"})
        await asyncio.sleep(0)  # a stray cancellation would be raised here
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    async with hangguard.mcp.McpClient(chaos_sse.url, timeout=5, retry=1) as client:
        chaos_sse.fault = HttpFault("status", status=503, methods={"tools/call"})
        left = await asyncio.gather(*(asyncio.create_task(call_then_await()) for _ in range(3)))
        chaos_sse.fault = None
    assert left == [0, 0, 0]
