"""Safe to repeat is learned: after a server died mid-call, the client fetches the tool
list itself to decide whether to send the call again, keeps it per server, and drops it
on ``notifications/tools/list_changed`` and on reconnecting to a different server.

Real servers (the SDK's MCPServer and fastmcp, ``tests/mcp_learn_server.py``) killed
mid-call and restarted on the same port; the tools count their executions in a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from mcp_helpers import eventually, free_port

SERVER = Path(__file__).parent / "mcp_learn_server.py"
IMPLS = ["mcp", "fastmcp"]


def need(impl: str) -> None:
    if impl != "fastmcp":
        return
    try:
        import fastmcp  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but fastmcp is missing: pip install fastmcp")
        pytest.skip("fastmcp is missing: pip install fastmcp")


def executions(log: Path, tool: str) -> int:
    return log.read_text().splitlines().count(tool) if log.exists() else 0


def accepting(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """The counting server on streamable HTTP at 127.0.0.1:port, killable, restartable."""

    def __init__(self, impl: str, tmp: Path) -> None:
        self.impl = impl
        self.log = tmp / "executions.log"
        self.state = tmp / "state"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, version: str = "1") -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SERVER),
            "--impl",
            self.impl,
            "--log",
            str(self.log),
            "--state",
            str(self.state),
            "--port",
            str(self.port),
            "--version",
            version,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await eventually(lambda: accepting(self.port), f"{self.impl} listening", 60)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@contextlib.asynccontextmanager
async def server(impl: str, tmp: Path) -> AsyncIterator[Server]:
    srv = Server(impl, tmp)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.kill()


def tool_span(spans: InMemorySpanExporter, tool: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == f"execute_tool {tool}"]
    assert found, [s.name for s in spans.get_finished_spans()]
    return found[-1]


def decisions(span: ReadableSpan) -> list[tuple[str, Any, Any]]:
    return [
        (
            e.name,
            (e.attributes or {}).get("hangguard.mcp.resend.rule"),
            (e.attributes or {}).get("hangguard.mcp.resend.annotations"),
        )
        for e in span.events
        if e.name in ("hangguard.mcp.resend", "hangguard.mcp.resend_refused")
        # Learning the list retries refused connects: those never reached the server.
        and (e.attributes or {}).get("hangguard.mcp.resend.rule") != "not_sent"
    ]


async def kill_mid_call_and_restart(
    srv: Server, client: hangguard.mcp.McpClient, tool: str, version: str = "1"
) -> asyncio.Task[Any]:
    call = asyncio.create_task(client.call_tool(tool))
    await eventually(lambda: executions(srv.log, tool) == 1, f"{tool} started", 30)
    await srv.kill()
    await srv.start(version)
    return call


@pytest.mark.parametrize("impl", IMPLS)
async def test_a_read_only_tool_is_learned_and_executed_again_exactly_once(
    impl: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    need(impl)
    # No list_tools(): the client learns the annotations when it must decide.
    async with (
        server(impl, tmp_path) as srv,
        hangguard.mcp.McpClient(srv.url, timeout=60, connect_timeout=30) as client,
    ):
        call = await kill_mid_call_and_restart(srv, client, "job_read")
        result = await call
        assert not result.is_error
        assert client.tools is not None  # kept for the next decision
    assert executions(srv.log, "job_read") == 2  # the killed run, and one more
    assert decisions(tool_span(spans, "job_read")) == [
        ("hangguard.mcp.resend", "read_only_hint", "learned")
    ]


@pytest.mark.parametrize("impl", IMPLS)
async def test_a_tool_not_marked_idempotent_is_learned_and_not_executed_again(
    impl: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    need(impl)
    async with (
        server(impl, tmp_path) as srv,
        hangguard.mcp.McpClient(srv.url, timeout=60, connect_timeout=30) as client,
    ):
        call = await kill_mid_call_and_restart(srv, client, "job_write")
        with pytest.raises(hangguard.McpConnectError) as info:
            await call
        # The list was learned from the restarted server, and is kept.
        assert client.tools is not None
    assert executions(srv.log, "job_write") == 1
    assert "not marked idempotent" in str(info.value)
    assert decisions(tool_span(spans, "job_write")) == [
        ("hangguard.mcp.resend_refused", "not_idempotent", "learned")
    ]


async def test_the_list_kept_from_list_tools_decides_as_cached(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with (
        server("mcp", tmp_path) as srv,
        # Enough attempts of the call itself to outlast the restart.
        hangguard.mcp.McpClient(srv.url, timeout=60, connect_timeout=30, retry=12) as client,
    ):
        await client.list_tools()
        call = await kill_mid_call_and_restart(srv, client, "job_read")
        assert not (await call).is_error
    assert executions(srv.log, "job_read") == 2
    assert decisions(tool_span(spans, "job_read")) == [
        ("hangguard.mcp.resend", "read_only_hint", "cached")
    ]


async def test_a_different_server_at_the_address_drops_the_kept_list(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with (
        server("mcp", tmp_path) as srv,
        hangguard.mcp.McpClient(srv.url, timeout=60, connect_timeout=30) as client,
    ):
        await client.list_tools()  # job: readOnlyHint, from version 1
        # Version 2 comes up in its place, where job is no longer read-only.
        srv.state.write_text("write")
        call = await kill_mid_call_and_restart(srv, client, "job", version="2")
        with pytest.raises(hangguard.McpConnectError):
            await call
    assert executions(srv.log, "job") == 1
    assert decisions(tool_span(spans, "job")) == [
        ("hangguard.mcp.resend_refused", "not_idempotent", "learned")
    ]


def stdio_client(tmp: Path, **kwargs: Any) -> hangguard.mcp.McpClient:
    path = os.environ.get("PYTHONPATH")
    env = None
    if path:
        env = {"PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep))}
    command = [
        sys.executable,
        str(SERVER),
        "--impl",
        "mcp",
        "--log",
        str(tmp / "executions.log"),
        "--state",
        str(tmp / "state"),
    ]
    return hangguard.mcp.McpClient(command, connect_timeout=60, env=env, **kwargs)


async def test_list_changed_drops_the_kept_list_and_the_changed_tool_is_learned_again(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    log = tmp_path / "executions.log"
    # The 2026-07-28 revision sends list_changed only to a client that subscribed.
    async with stdio_client(tmp_path, timeout=60, protocol="legacy") as client:
        tools = {t.name: t for t in await client.list_tools()}
        assert tools["job"].annotations is not None and tools["job"].annotations.read_only_hint
        # retag makes job not read-only and says so with notifications/tools/list_changed.
        await client.call_tool("retag")
        await eventually(lambda: client.tools is None, "list dropped on list_changed", 30)
        pid = client.server_pid
        assert pid is not None
        call = asyncio.create_task(client.call_tool("job"))
        await eventually(lambda: executions(log, "job") == 1, "job started", 30)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(hangguard.McpConnectError):
            await call
        # The list was learned again (from the server started to learn it), not re-sent.
        assert client.tools is not None and client.server_pid not in (None, pid)
    assert executions(log, "job") == 1
    assert decisions(tool_span(spans, "job")) == [
        ("hangguard.mcp.resend_refused", "not_idempotent", "learned")
    ]
