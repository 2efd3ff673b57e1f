"""MCP servers as third parties really behave: the TypeScript SDK's server-everything
(npm, run with node), and the SDK's own server answering the way those servers do.

Every fault is real: the server killed and restarted on the same port. What the server
received is counted (server-everything logs each POST; the chaos server records each
tool run), not only the outcome.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosServer, HttpFault
from mcp_helpers import NodeServer, within

BUDGET = 5.0
STALE = "Bad Request: No valid session ID provided"

pytestmark = pytest.mark.usefixtures("no_backoff")


def tool_span(spans: InMemorySpanExporter, tool: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == f"execute_tool {tool}"]
    assert found, [s.name for s in spans.get_finished_spans()]
    return found[-1]


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def text(result: Any) -> str:
    return str(result.content[0].text)


# --- a stale session answered with 400 ----------------------------------------------------


async def test_server_everything_restarted_answers_400_and_the_call_is_resent_on_a_new_session(
    everything: NodeServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(everything.url, timeout=BUDGET) as client:
        assert text(await client.call_tool("echo", {"message": "a"})) == "Echo: a"
        # What a connect and one call cost the server, in POSTs.
        fresh = everything.posts
        await everything.restart()
        everything.posts = 0
        with within(BUDGET):
            result = await client.call_tool("echo", {"message": "b"})
        assert text(result) == "Echo: b"
        assert client.connected
        # The stale POST, refused with 400, then exactly a new session and the call.
        assert everything.posts == fresh + 1
        assert text(await client.call_tool("echo", {"message": "c"})) == "Echo: c"
    span = [s for s in spans.get_finished_spans() if s.name == "execute_tool echo"][1]
    (lost,) = events(span, "hangguard.mcp.session_lost")
    assert lost["hangguard.mcp.resend.rule"] == "session_lost"
    assert "HTTP 400" in lost["exception.message"] and STALE in lost["exception.message"]


async def test_a_400_naming_the_session_is_a_session_loss_and_the_call_runs_once(
    chaos: ChaosServer,
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=BUDGET, protocol="legacy") as client:
        await client.call_tool("echo", {"text": "a"})
        chaos.fault = HttpFault(
            "status", status=400, message=STALE, methods={"tools/call"}, first=1
        )
        result = await client.call_tool("echo", {"text": "b"})
    assert result.structured_content == {"result": "b"}
    assert chaos.recorder.count("fault", "tools/call") == 1
    assert chaos.recorder.count("finished", "echo") == 2  # "a", then "b" once


async def test_a_400_that_is_not_about_the_session_keeps_its_status_and_the_servers_words(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=BUDGET, protocol="legacy") as client:
        chaos.fault = HttpFault(
            "status", status=400, message="Bad Request: arguments too large", methods={"tools/call"}
        )
        with pytest.raises(hangguard.McpCallError) as info:
            await client.call_tool("echo", {"text": "x"})
        chaos.fault = None
        assert client.connected  # an answer: the session is fine
        assert (await client.call_tool("echo", {"text": "y"})).structured_content == {"result": "y"}
    err = info.value
    assert err.code == -32000
    assert "HTTP 400" in str(err) and "arguments too large" in str(err)
    failed = next(s for s in spans.get_finished_spans() if s.name == "execute_tool echo")
    assert failed.attributes is not None
    assert failed.attributes["http.response.status_code"] == 400
    assert chaos.recorder.count("fault", "tools/call") == 1
    assert chaos.recorder.count("finished", "echo") == 1
