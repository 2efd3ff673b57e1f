"""Which failed MCP calls are sent again: a forgotten session always, a request that may
have run only for a tool that is safe to repeat.

Real servers throughout: the SDK's stateful streamable-HTTP mode (the chaos server)
restarted on the same port, a stdio server and an HTTP server killed mid-call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosServer, stdio_command
from mcp_helpers import ChaosProcess, LeakCheck, eventually, within

BUDGET = 1.0

pytestmark = pytest.mark.usefixtures("no_backoff")


def tool_span(spans: InMemorySpanExporter, tool: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == f"execute_tool {tool}"]
    assert found, [s.name for s in spans.get_finished_spans()]
    return found[-1]


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


# --- a session the server forgot ------------------------------------------------------


@pytest.mark.parametrize("json_response", [False, True], ids=["sse-stream", "json"])
async def test_a_session_lost_in_a_server_restart_is_opened_anew_and_the_call_resent(
    json_response: bool, spans: InMemorySpanExporter
) -> None:
    # The SDK's stateful streamable-HTTP mode, answering on an event stream or in JSON.
    first = ChaosServer(json_response=json_response).start()
    port = first.port
    try:
        client = hangguard.mcp.McpClient(first.url, timeout=5, protocol="legacy", retry=1)
        async with client:
            assert (await client.call_tool("echo", {"text": "a"})).structured_content == {
                "result": "a"
            }
        # The same client object, reconnected, keeps a session across the restart.
        async with client:
            await client.call_tool("echo", {"text": "b"})
            await asyncio.to_thread(first.stop)
            second = ChaosServer(json_response=json_response, port=port).start()
            try:
                with within(BUDGET):
                    result = await client.call_tool("echo", {"text": "after restart"})
                assert result.structured_content == {"result": "after restart"}
                # The new server ran the call once; the old one never saw it.
                assert second.recorder.count("finished", "echo") == 1
            finally:
                await client.aclose()
                await asyncio.to_thread(second.stop)
    finally:
        first.stop()
    span = tool_span(spans, "echo")
    lost = events(span, "hangguard.mcp.session_lost")
    assert len(lost) == 1 and lost[0]["hangguard.mcp.resend.rule"] == "session_lost"
    assert not events(span, "hangguard.retry")  # re-sent at once, not by the retries


async def test_every_call_after_a_restart_succeeds_not_only_the_first(
    spans: InMemorySpanExporter,
) -> None:
    first = ChaosServer().start()
    port = first.port
    second: ChaosServer | None = None
    try:
        async with hangguard.mcp.McpClient(first.url, timeout=5, protocol="legacy") as client:
            await client.call_tool("echo", {"text": "a"})
            await asyncio.to_thread(first.stop)
            second = ChaosServer(port=port).start()
            results = await asyncio.gather(
                *(client.call_tool("echo", {"text": str(i)}) for i in range(5))
            )
            assert [r.structured_content for r in results] == [{"result": str(i)} for i in range(5)]
    finally:
        first.stop()
        if second is not None:
            await asyncio.to_thread(second.stop)


# --- a connection lost after the request left ------------------------------------------


async def test_http_server_killed_mid_call_is_not_resent_for_a_tool_not_marked_idempotent(
    spans: InMemorySpanExporter,
) -> None:
    async with ChaosProcess() as server:
        leaks = LeakCheck(server.port)
        # Retries on (the default): only the rule keeps the call from being sent again.
        async with hangguard.mcp.McpClient(server.url, timeout=30) as client:
            await client.list_tools()
            call = asyncio.create_task(client.call_tool("hang"))
            await server.recorder.wait_for("started", "hang", timeout=30)
            with within(BUDGET):
                server.kill()
                with pytest.raises(hangguard.McpConnectError) as info:
                    await call
        await leaks.verify()
    message = str(info.value)
    assert "connection lost after the request was sent; not retried" in message
    assert "tool 'hang'" in message and "not marked idempotent" in message
    assert info.value.__cause__ is not None
    span = tool_span(spans, "hang")
    # Only reconnects (to see whether the server at the address is still the one whose
    # tool list is kept), never the call itself.
    retried = {e["hangguard.retry.name"] for e in events(span, "hangguard.retry")}
    assert retried <= {f"MCP connect {server.url}"}
    refused = events(span, "hangguard.mcp.resend_refused")
    assert [e["hangguard.mcp.resend.rule"] for e in refused] == ["not_idempotent"]
    assert refused[0]["hangguard.mcp.resend.annotations"] == "cached"


def stdio_client(stderr: Any, **kwargs: Any) -> hangguard.mcp.McpClient:
    # The SDK passes a stdio server only a few variables: keep this run's import path, so
    # the server is the chaos server of the code under test.
    path = os.environ.get("PYTHONPATH")
    env = None
    if path:
        env = {"PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep))}
    return hangguard.mcp.McpClient(
        stdio_command("--announce"), connect_timeout=60, stderr=stderr, env=env, **kwargs
    )


def started(log: Path, tool: str) -> int:
    return sum(
        1 for line in log.read_text().splitlines() if '"started"' in line and f'"{tool}"' in line
    )


async def test_stdio_server_killed_mid_call_learns_the_tool_list_and_does_not_resend(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    log = tmp_path / "server-stderr.jsonl"
    leaks = LeakCheck()
    with log.open("w") as stderr:
        client = stdio_client(stderr, timeout=30)
        async with client:
            pid = client.server_pid
            assert pid is not None
            call = asyncio.create_task(client.call_tool("hang"))
            await eventually(lambda: started(log, "hang") == 1, "hang started", 30)
            with within(BUDGET + 30):  # a new server is started to learn the tool list
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(hangguard.McpConnectError) as info:
                    await call
            # The new server gave the tool list; the call was not sent to it.
            assert client.server_pid not in (None, pid)
            assert client.tools is not None
    await leaks.verify()
    assert started(log, "hang") == 1
    assert "not retried: tool 'hang' is not marked idempotent" in str(info.value)
    span = tool_span(spans, "hang")
    refused = events(span, "hangguard.mcp.resend_refused")
    assert [
        (e["hangguard.mcp.resend.rule"], e["hangguard.mcp.resend.annotations"]) for e in refused
    ] == [("not_idempotent", "learned")]


@pytest.mark.parametrize("how", ["annotation", "per-call", "allow-list"])
async def test_stdio_server_killed_mid_call_resends_a_tool_safe_to_repeat(
    tmp_path: Path, spans: InMemorySpanExporter, how: str
) -> None:
    log = tmp_path / "server-stderr.jsonl"
    leaks = LeakCheck()
    tool, args = ("sleep", {"seconds": 0.5}) if how == "annotation" else ("flaky", {})
    kwargs: dict[str, Any] = {"idempotent_tools": ["flaky"]} if how == "allow-list" else {}
    call_kwargs: dict[str, Any] = {"idempotent": True} if how == "per-call" else {}
    with log.open("w") as stderr:
        client = stdio_client(stderr, timeout=60, **kwargs)
        async with client:
            if how == "annotation":
                await client.list_tools()
            pid = client.server_pid
            assert pid is not None
            # flaky's first call with a fresh key hangs; the second answers.
            if tool == "flaky":
                args = {"key": how, "failures": 1, "mode": "hang"}
            call = asyncio.create_task(client.call_tool(tool, args, **call_kwargs))
            await eventually(lambda: started(log, tool) == 1, f"{tool} started", 30)
            os.kill(pid, signal.SIGKILL)
            if tool == "flaky":
                # The new server's flaky has a fresh count: it hangs again. Enough to
                # see that the call was sent a second time.
                await eventually(lambda: started(log, tool) == 2, "sent again", 60)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                result = await call
                assert not result.is_error
            assert client.server_pid not in (None, pid)
    await leaks.verify()
    assert started(log, tool) == 2
    rule = {"annotation": "read_only_hint", "per-call": "caller", "allow-list": "allow_list"}
    span = tool_span(spans, tool)
    assert [e["hangguard.mcp.resend.rule"] for e in events(span, "hangguard.mcp.resend")] == [
        rule[how]
    ]


async def test_a_failed_connect_is_retried_whatever_the_tool(
    spans: InMemorySpanExporter,
) -> None:
    from hangguard.testing.chaos import closed_port_url

    client = hangguard.mcp.McpClient(closed_port_url(), timeout=BUDGET, retry=3)
    try:
        with pytest.raises(hangguard.McpConnectError):
            await client.call_tool("hang")
    finally:
        await client.aclose()
    span = tool_span(spans, "hang")
    assert len(events(span, "hangguard.retry")) == 2
    assert not events(span, "hangguard.mcp.resend_refused")
