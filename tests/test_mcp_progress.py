"""``call_tool(idle_timeout=...)``: progress keeps a call alive, silence ends it.

Real chaos server; budgets small, margins wide, and every claim checked by what the
server and the span saw rather than by how long it took.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosServer
from mcp_helpers import within

IDLE = 0.5


def tool_span(spans: InMemorySpanExporter, tool: str) -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"execute_tool {tool}"]
    return span


def progress_events(span: ReadableSpan) -> list[float]:
    return [
        e.attributes["hangguard.mcp.progress.value"]  # type: ignore[index,misc]
        for e in span.events
        if e.name == "hangguard.mcp.progress"
    ]


@pytest.mark.parametrize("transport", ["http", "http-legacy"])
async def test_progress_keeps_a_call_alive_past_its_idle_timeout(
    chaos: ChaosServer, spans: InMemorySpanExporter, transport: str
) -> None:
    protocol = "legacy" if transport == "http-legacy" else "auto"
    # Eight steps 0.15 s apart: 1.2 s in all, more than twice the idle timeout.
    async with hangguard.mcp.McpClient(chaos.url, timeout=30, protocol=protocol) as client:
        result = await client.call_tool(
            "progress", {"steps": 8, "interval": 0.15}, idle_timeout=IDLE
        )
    assert not result.is_error
    assert progress_events(tool_span(spans, "progress")) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_silence_longer_than_idle_timeout_ends_the_call(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client:
        with within(3 * 0.05 + IDLE), pytest.raises(hangguard.DeadlineExceeded) as info:
            await client.call_tool(
                "progress", {"steps": 3, "interval": 0.05, "then_hang": True}, idle_timeout=IDLE
            )
        # The server's handler was cancelled: the call ended on the wire too.
        await chaos.wait_for("cancelled", "progress")
    err = info.value
    assert err.deadline_name == "idle_timeout" and "no progress" in str(err)
    assert "3 progress notification(s)" in str(err)
    span = tool_span(spans, "progress")
    assert span.attributes is not None and span.attributes["error.type"] == "timeout"
    assert progress_events(span) == [1, 2, 3]


async def test_a_tool_that_never_reports_progress_ends_at_idle_timeout(
    chaos: ChaosServer,
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client:
        with within(IDLE), pytest.raises(hangguard.DeadlineExceeded, match="idle_timeout"):
            await client.call_tool("hang", idle_timeout=IDLE)


async def test_the_hard_maximum_still_holds_while_progress_keeps_coming(
    chaos: ChaosServer,
) -> None:
    async with hangguard.mcp.McpClient(chaos.url) as client:
        with within(1.0), pytest.raises(hangguard.DeadlineExceeded) as info:
            await client.call_tool(
                "progress", {"steps": 100, "interval": 0.05}, timeout=1.0, idle_timeout=IDLE
            )
    assert info.value.deadline_name != "idle_timeout"


async def test_idle_timeout_is_checked(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url) as client:
        with pytest.raises(ValueError, match="idle_timeout"):
            await client.call_tool("echo", idle_timeout=0)
        with pytest.raises(TypeError, match="idle_timeout"):
            await client.call_tool("echo", idle_timeout="1s")  # type: ignore[arg-type]
