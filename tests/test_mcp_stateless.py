"""The 2026-07-28 revision, stateless: no ``initialize``, no session id, version and
capabilities in each request's ``_meta``; an HTTP client cancels by closing the stream.

Against the SDK's own server in that mode (the chaos server, streamable HTTP with
``stateless_http``), the client's rules hold as on the earlier revisions: the deadline
bounds a hanging tool and the server is told (its handler is cancelled), an idempotent
call is sent again after the server restarted, and the trace context reaches the
server's span.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosServer
from mcp_helpers import ChaosProcess, within

MODERN = "2026-07-28"


@pytest.fixture
def stateless() -> Iterator[ChaosServer]:
    server = ChaosServer(stateless=True).start()
    yield server
    server.stop()


def finished(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def server_span(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The server's span ``name``, once its thread has ended it.

    The server ends its span after it answered (or after its handler's cancel unwound),
    so the client can be done first: poll until it is there, bounded.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 20
    while not (found := finished(spans, name)):
        assert loop.time() < give_up, f"the server never ended its span {name!r}"
        await asyncio.sleep(0.01)  # polling another thread's exporter: no event to wait on
    (span,) = found
    return span


async def test_the_client_speaks_the_stateless_revision(stateless: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(stateless.url, timeout=5) as client:
        assert client.protocol_version == MODERN
        result = await client.call_tool("echo", {"text": "a"})
    assert result.structured_content == {"result": "a"}
    assert stateless.recorder.count("finished", "echo") == 1


async def test_a_hanging_tool_is_bounded_by_the_deadline_and_the_server_cancels_it(
    stateless: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(stateless.url, timeout=30) as client:
        assert client.protocol_version == MODERN
        with within(0.5), pytest.raises(hangguard.DeadlineExceeded):
            async with hangguard.deadline(0.5):
                await client.call_tool("hang")
        # Told by the closed response stream: the handler was cancelled, once.
        await stateless.wait_for("cancelled", "hang")
    assert stateless.recorder.count("started", "hang") == 1
    assert stateless.recorder.count("cancelled", "hang") == 1
    assert stateless.recorder.count("finished", "hang") == 0
    # The time left went with the request: the server ran the handler under it.
    served = await server_span(spans, "tools/call hang")
    assert served.kind is SpanKind.SERVER


async def test_the_trace_context_reaches_the_servers_span(
    stateless: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(stateless.url, timeout=5) as client:
        await client.call_tool("echo", {"text": "traced"})
    (tool,) = finished(spans, "execute_tool echo")
    served = await server_span(spans, "tools/call echo")
    assert served.kind is SpanKind.SERVER
    assert served.context.trace_id == tool.context.trace_id
    assert served.parent is not None  # joined the client's trace, not a root of its own


async def test_an_idempotent_call_is_sent_again_after_the_server_restarts(
    spans: InMemorySpanExporter,
) -> None:
    async with ChaosProcess("--stateless") as first:
        port = first.port
        client = hangguard.mcp.McpClient(first.url, timeout=60, retry=20)
        async with client:
            assert client.protocol_version == MODERN
            call = asyncio.create_task(client.call_tool("sleep", {"seconds": 0.2}))
            # sleep is read-only: learned, since no list_tools() was made.
            await first.recorder.wait_for("started", "sleep", timeout=30)
            first.kill()
            async with ChaosProcess("--stateless", "--port", str(port)) as second:
                result = await call
                assert not result.is_error
                assert second.recorder.count("finished", "sleep") == 1
    assert first.recorder.count("finished", "sleep") == 0
    (span,) = finished(spans, "execute_tool sleep")
    rules = [
        (e.attributes or {}).get("hangguard.mcp.resend.rule")
        for e in span.events
        if e.name == "hangguard.mcp.resend"
    ]
    assert "read_only_hint" in rules
