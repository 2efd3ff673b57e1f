"""The per-server circuit breaker (``HANGGUARD_MCP_BREAKER``), on the real chaos server.

The cool-down is measured on hangguard's clock, so a FakeClock moves it: no test waits
for it to pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from hangguard.mcp._breaker import reset_breakers
from hangguard.testing import FakeClock, use_clock
from hangguard.testing.chaos import ChaosServer, HttpFault, closed_port_url

pytestmark = pytest.mark.usefixtures("no_backoff")


@pytest.fixture
def breaker_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    monkeypatch.setenv("HANGGUARD_MCP_BREAKER", "failures=3,cooldown=30s")
    reset_breakers()
    clock = FakeClock()
    with use_clock(clock):
        yield clock
    reset_breakers()


def faults(chaos: ChaosServer) -> int:
    return chaos.recorder.count("fault", "tools/call")


async def test_the_breaker_opens_after_n_failures_and_then_fails_fast_without_sending(
    chaos: ChaosServer, breaker_on: FakeClock, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=1) as client:
        chaos.fault = HttpFault("status", status=503, methods={"tools/call"})
        for _ in range(3):
            with pytest.raises(hangguard.McpConnectError) as first:
                await client.call_tool("echo", {"text": "x"})
            assert not isinstance(first.value, hangguard.McpCircuitOpen)
        for _ in range(20):
            with pytest.raises(hangguard.McpCircuitOpen) as info:
                await client.call_tool("echo", {"text": "x"})
        assert faults(chaos) == 3  # the twenty never reached the server
    err = info.value
    assert "circuit open since" in str(err) and "503" in err.last_error
    assert chaos.url in str(err) and err.tool == "echo"
    assert err.retry_at - err.since == pytest.approx(30)
    opened = [
        e for s in spans.get_finished_spans() for e in s.events if e.name == "hangguard.mcp.breaker"
    ]
    assert [e.attributes["hangguard.mcp.breaker.state"] for e in opened] == ["open"]  # type: ignore[index]


async def test_one_probe_after_the_cooldown_closes_it_when_the_server_is_back(
    chaos: ChaosServer, breaker_on: FakeClock
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=1) as client:
        chaos.fault = HttpFault("status", status=503, methods={"tools/call"})
        for _ in range(3):
            with pytest.raises(hangguard.McpConnectError):
                await client.call_tool("echo", {"text": "x"})
        breaker_on.advance(31)
        # Still failing: the probe fails and the breaker opens for another cool-down.
        with pytest.raises(hangguard.McpConnectError) as probe:
            await client.call_tool("echo", {"text": "probe"})
        assert not isinstance(probe.value, hangguard.McpCircuitOpen)
        with pytest.raises(hangguard.McpCircuitOpen):
            await client.call_tool("echo", {"text": "x"})
        chaos.fault = None
        breaker_on.advance(31)
        result = await client.call_tool("echo", {"text": "back"})
        assert result.structured_content == {"result": "back"}
        for i in range(5):  # closed again
            await client.call_tool("echo", {"text": str(i)})
    assert faults(chaos) == 4


async def test_the_breaker_is_shared_by_every_client_of_the_server(breaker_on: FakeClock) -> None:
    url = closed_port_url()
    first = hangguard.mcp.McpClient(url, timeout=5, retry=1)
    second = hangguard.mcp.McpClient(url, timeout=5, retry=1, name="other")
    try:
        for _ in range(3):
            with pytest.raises(hangguard.McpConnectError, match="refused"):
                await first.call_tool("echo")
        with pytest.raises(hangguard.McpCircuitOpen):
            await second.call_tool("echo")
    finally:
        await first.aclose()
        await second.aclose()


async def test_answers_of_any_kind_keep_it_closed(
    chaos: ChaosServer, breaker_on: FakeClock
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=1) as client:
        for _ in range(5):
            with pytest.raises(hangguard.McpCallError):
                await client.call_tool("raise")
            assert (await client.call_tool("is_error")).is_error


async def test_off_by_default(chaos: ChaosServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANGGUARD_MCP_BREAKER", raising=False)
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=1) as client:
        chaos.fault = HttpFault("status", status=503, methods={"tools/call"})
        for _ in range(8):
            with pytest.raises(hangguard.McpConnectError) as info:
                await client.call_tool("echo")
            assert not isinstance(info.value, hangguard.McpCircuitOpen)
    assert faults(chaos) == 8


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from hangguard import _config

    monkeypatch.setenv("HANGGUARD_MCP_BREAKER", "failures=lots")
    with pytest.raises(hangguard.ConfigError, match="HANGGUARD_MCP_BREAKER") as info:
        _config.mcp_breaker()
    assert info.value.name == "HANGGUARD_MCP_BREAKER"
    monkeypatch.setenv("HANGGUARD_MCP_BREAKER", "on")
    assert _config.mcp_breaker() == (5, 30.0)
    monkeypatch.setenv("HANGGUARD_MCP_BREAKER", "cooldown=2m")
    assert _config.mcp_breaker() == (5, 120.0)
