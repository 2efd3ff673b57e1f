"""DeadlineMiddleware: the caller's deadline enforced on the server, and inherited by the tool."""

from __future__ import annotations

import math
from typing import Any

import mcp
import pytest
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

import hangguard
from hangguard.mcp._meta import parse_timeout_meta
from hangguard.testing.chaos import ChaosServer, build_chaos_server
from mcp_helpers import within


@pytest.mark.parametrize(
    ("meta", "seconds"),
    [
        (None, None),
        ({}, None),
        ({"traceparent": "00-x"}, None),
        ({"hangguard/timeout-ms": 1500}, 1.5),
        ({"hangguard/timeout-ms": 0}, 0.0),
        ({"hangguard/timeout-ms": 2.5}, 0.0025),
        ({"hangguard/timeout-ms": "250"}, 0.25),
    ],
)
def test_parse_timeout_meta(meta: Any, seconds: float | None) -> None:
    assert parse_timeout_meta(meta) == seconds


@pytest.mark.parametrize("value", [-1, "soon", True, None, math.nan, [1]])
def test_a_bad_timeout_meta_names_the_key(value: object) -> None:
    with pytest.raises(ValueError, match="hangguard/timeout-ms"):
        parse_timeout_meta({"hangguard/timeout-ms": value})


def test_max_timeout_is_checked() -> None:
    with pytest.raises(ValueError, match="max_timeout"):
        hangguard.mcp.DeadlineMiddleware(max_timeout=-1)
    assert hangguard.mcp.DeadlineMiddleware(5).max_timeout == 5
    assert hangguard.mcp.DeadlineMiddleware().max_timeout == math.inf
    assert repr(hangguard.mcp.DeadlineMiddleware(5)) == "DeadlineMiddleware(max_timeout=5.0)"


async def test_a_bad_timeout_meta_is_an_invalid_params_error(chaos: ChaosServer) -> None:
    async with mcp.Client(chaos.url) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("echo", {}, meta={"hangguard/timeout-ms": "soon"})
    assert info.value.code == -32602
    assert "hangguard/timeout-ms" in info.value.message
    assert chaos.recorder.count("started", "echo") == 0


async def test_without_the_key_or_a_cap_the_handler_is_unbounded(chaos: ChaosServer) -> None:
    async with mcp.Client(chaos.url) as client:
        result = await client.call_tool("deadline_info", {})
    assert result.structured_content == {"remaining_s": None, "timeout_ms": None}


async def test_a_raw_sdk_client_gets_the_deadline_it_sends(chaos: ChaosServer) -> None:
    async with mcp.Client(chaos.url) as client:
        with within(0.3), pytest.raises(MCPError) as info:
            await client.call_tool("hang", {}, meta={"hangguard/timeout-ms": 300})
    assert info.value.code == -32001
    await chaos.wait_for("cancelled", "hang")


async def test_the_tools_own_mcp_calls_inherit_the_deadline(chaos: ChaosServer) -> None:
    """A tool that calls another MCP server passes the rest of its budget on."""
    relay: MCPServer[Any] = MCPServer("relay", middleware=[hangguard.mcp.DeadlineMiddleware()])

    @relay.tool()
    async def ask_chaos() -> dict[str, Any]:
        async with hangguard.mcp.McpClient(chaos.url, timeout=30) as downstream:
            result = await downstream.call_tool("deadline_info")
        assert result.structured_content is not None
        return result.structured_content

    async with hangguard.mcp.McpClient(relay, timeout=30) as client, hangguard.deadline(2.0):
        result = await client.call_tool("ask_chaos")
    info = result.structured_content
    assert info is not None
    # Two hops, each subtracting the time spent so far: never more than the first budget.
    assert 1000 < info["timeout_ms"] <= 2000
    assert 0.5 < info["remaining_s"] <= 2.0


async def test_in_process_servers_get_the_deadline_too() -> None:
    server = build_chaos_server()
    async with hangguard.mcp.McpClient(server, timeout=0.4) as client:
        assert client.transport == "in-process"
        with within(0.4), pytest.raises(hangguard.DeadlineExceeded):
            await client.call_tool("hang")
        info = (await client.call_tool("deadline_info")).structured_content
    assert info is not None and 0 < info["timeout_ms"] <= 400
