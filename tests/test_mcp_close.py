"""Closing an ``McpClient``: a connect in flight does not outlive ``aclose()``, and
whatever goes wrong while closing is reported, not lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosServer, HttpFault, stdio_command
from mcp_helpers import LeakCheck, child_pids, eventually, within

BUDGET = 1.0
# How long a test lets a connect that nothing ends run before it is a failure.
STUCK = 10.0


@pytest.mark.parametrize("kind", ["http", "sse", "stdio"])
async def test_aclose_tears_down_a_connect_in_flight(
    kind: str, chaos: ChaosServer, chaos_sse: ChaosServer
) -> None:
    server = chaos_sse if kind == "sse" else chaos
    leaks = LeakCheck(None if kind == "stdio" else server.port)
    where: Any
    if kind == "stdio":
        where = stdio_command("--fault", "never-answer")  # never answers the handshake
    else:
        where = server.url
        server.fault = HttpFault("never_answer", methods={"initialize"})
    client = hangguard.mcp.McpClient(where, protocol="legacy", connect_timeout=STUCK * 2)
    call = asyncio.create_task(client.call_tool("echo", {"text": "x"}))
    connecting = asyncio.create_task(client.connect())  # waits for the call's connect
    if kind == "stdio":
        await eventually(lambda: bool(set(child_pids()) - leaks.children), "server spawned", 30)
    else:
        await server.recorder.wait_for("fault", "initialize")

    with within(BUDGET):
        await client.aclose()
        # The process is reaped and the sockets closed by the time aclose() returns.
        await leaks.verify()
        async with asyncio.timeout(STUCK):
            results = await asyncio.gather(call, connecting, return_exceptions=True)
    for result in results:
        assert isinstance(result, hangguard.McpConnectError), result
        assert "closed while connecting" in str(result)
    assert isinstance(results[0], hangguard.McpConnectError) and results[0].tool == "echo"
    assert not client.connected and client.server_pid is None
    with pytest.raises(RuntimeError, match="closed"):
        await client.call_tool("echo", {"text": "x"})


async def test_an_explicit_connect_after_aclose_reopens(chaos: ChaosServer) -> None:
    leaks = LeakCheck(chaos.port)
    client = hangguard.mcp.McpClient(chaos.url, protocol="legacy", connect_timeout=STUCK * 2)
    chaos.fault = HttpFault("never_answer", methods={"initialize"}, first=1)
    call = asyncio.create_task(client.call_tool("echo", {"text": "x"}))
    await chaos.recorder.wait_for("fault", "initialize")
    await client.aclose()
    with pytest.raises(hangguard.McpConnectError, match="closed while connecting"):
        await call
    async with client:
        result = await client.call_tool("echo", {"text": "again"})
        assert result.structured_content == {"result": "again"}
    await leaks.verify()


def _failing_teardown_server() -> MCPServer:
    @contextlib.asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        yield {}
        raise RuntimeError("chaos: the server's teardown failed")

    server = MCPServer("teardown", lifespan=lifespan)

    @server.tool()
    def echo(text: str) -> str:
        return text

    return server


@pytest.mark.parametrize("abrupt", [False, True], ids=["polite", "abrupt"])
async def test_a_failure_while_closing_is_logged_once_with_its_traceback(
    abrupt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    client = hangguard.mcp.McpClient(_failing_teardown_server())
    await client.connect()
    assert (await client.call_tool("echo", {"text": "x"})).structured_content == {"result": "x"}
    with caplog.at_level(logging.WARNING, logger="hangguard.mcp"):
        await client.aclose(abrupt=abrupt)
    records = [r for r in caplog.records if r.name == "hangguard.mcp"]
    if abrupt:
        # Cancelled, the server's teardown never ran: nothing failed.
        assert records == []
        return
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert "failed while closing" in record.getMessage()
    assert "teardown failed" in record.getMessage()
    assert record.exc_info is not None
    assert "teardown failed" in str(record.exc_info[1])
