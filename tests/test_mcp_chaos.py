"""The chaos MCP server itself: its faults, its event log, its command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
import hangguard.mcp
from hangguard.testing.chaos import ChaosRecorder, ChaosServer, HttpFault, main
from mcp_helpers import ChaosProcess


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "teapot"}, "kind"),
        ({"kind": "status", "status": 42}, "status"),
        ({"kind": "status", "first": 0}, "first"),
        ({"kind": "status", "methods": "tools/call"}, "methods"),
    ],
)
def test_bad_faults_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        HttpFault(**kwargs)  # type: ignore[arg-type]


def test_fault_matching() -> None:
    assert HttpFault("html").matches("initialize")
    only = HttpFault("never_answer", methods=["tools/call"])
    assert only.matches("tools/call") and not only.matches("tools/list")


def test_bad_server_transport() -> None:
    with pytest.raises(ValueError, match="transport"):
        ChaosServer(transport="websocket")  # type: ignore[arg-type]


async def test_waiting_for_an_event_that_never_comes_says_what_did() -> None:
    recorder = ChaosRecorder()
    recorder.record("started", "echo")
    with pytest.raises(TimeoutError, match=r"\('started', 'echo'\)"):
        await recorder.wait_for("finished", "echo", timeout=0.05)
    recorder.record("finished", "echo")
    assert (await recorder.wait_for("finished", "echo")).tool == "echo"
    assert recorder.count("started") == 1


async def test_every_tool_records_its_calls(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        await client.call_tool("echo", {"text": "a"})
        await client.call_tool("sleep", {"seconds": 0})
        await client.call_tool("is_error")
        with pytest.raises(hangguard.McpCallError):
            await client.call_tool("raise")
        flaky = [await client.call_tool("flaky", {"key": "k", "failures": 1}) for _ in range(2)]
    assert [r.is_error for r in flaky] == [True, False]
    kinds = [(e.kind, e.tool) for e in chaos.events]
    assert ("finished", "echo") in kinds and ("finished", "sleep") in kinds
    assert ("failed", "is_error") in kinds and ("failed", "raise") in kinds
    assert chaos.recorder.count("started", "flaky") == 2


async def test_the_command_line_server_with_a_503_then_ok_fault() -> None:
    args = ["--fault", "status", "--status", "503", "--fault-method", "tools/call"]
    async with ChaosProcess(*args, "--fault-first", "1") as server:
        async with hangguard.mcp.McpClient(server.url, timeout=10, retry=2) as client:
            result = await client.call_tool("echo", {"text": "over the CLI"})
        assert result.structured_content == {"result": "over the CLI"}
        await server.recorder.wait_for("finished", "echo")
        assert server.recorder.count("fault", "tools/call") == 1


def test_stdio_rejects_http_faults() -> None:
    with pytest.raises(SystemExit, match="does not apply"):
        main(["--transport", "stdio", "--fault", "html"])


def test_help_names_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"], prog="hangguard chaos-mcp")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hangguard chaos-mcp"), out[:80]


async def test_help_lists_every_tool_the_server_has(capsys: pytest.CaptureFixture[str]) -> None:
    from hangguard.mcp._chaos._tools import build_chaos_server

    tools = [t.name for t in await build_chaos_server(ChaosRecorder()).list_tools()]
    assert "request_headers" in tools
    with pytest.raises(SystemExit):
        main(["--help"], prog="hangguard chaos-mcp")
    text = " ".join(capsys.readouterr().out.split())
    missing = [name for name in tools if f"{name}(" not in text]
    assert not missing, f"--help does not list {missing}"


def test_a_busy_port_is_one_line_and_exit_2() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "hangguard", "chaos-mcp", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_importing_hangguard_loads_no_mcp_and_works_without_it() -> None:
    code = (
        "import sys\n"
        "import hangguard, hangguard.testing\n"
        "assert 'mcp' not in sys.modules, 'mcp imported eagerly'\n"
        "sys.modules['mcp'] = None  # as if the extra were not installed\n"
        "try:\n"
        "    import hangguard.mcp\n"
        "except ImportError as exc:\n"
        '    assert "hangguard[mcp]" in str(exc), exc\n'
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- a call that never left is not "sent" ----------------------------------------------


def _unread_at(port: int) -> int:
    """Bytes that reached a socket listening on ``port`` and that its process has not read.

    The kernel's TCP table (this network namespace, every process): a stopped server's
    connection still receives a request, and its receive queue shows it, unread.
    """
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = list(f)[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, queues = fields[1], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    # A poll of state another process changes (no event to wait on across processes).
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_an_sse_call_the_killed_server_never_read_is_retried_and_runs_once(
    spans: InMemorySpanExporter,
) -> None:
    # The SDK's SSE server acknowledges each POST (202) before it runs the message: a POST
    # that got no status never ran. Stopped, the server cannot read the call's POST; killed,
    # its kernel resets the connection with the request unread; restarted on the same port,
    # the retried call (of a tool not marked idempotent) runs there exactly once.
    first = ChaosProcess("--transport", "sse")
    await first.__aenter__()
    port = first.port
    second = ChaosProcess("--transport", "sse", "--port", str(port))
    # Connect failures are retried while the new server starts (a second or two).
    policy = hangguard.RetryPolicy(
        attempts=200, backoff=hangguard.Backoff(initial=0.05, maximum=0.2)
    )
    try:
        async with hangguard.mcp.McpClient(first.url, timeout=60, retry=policy) as client:
            await client.call_tool("echo", {"text": "before"})
            os.kill(first.pid, signal.SIGSTOP)
            call = asyncio.create_task(
                client.call_tool("flaky", {"key": "once", "failures": 0}, idempotent=False)
            )
            await _until(lambda: _unread_at(port) > 0, "the call's POST to reach the server")
            first.kill()
            await first.__aexit__()
            await second.__aenter__()
            result = await call
        assert result.structured_content == {"result": "ok after 0 failure(s)"}
        assert first.recorder.count("started", "flaky") == 0
        assert second.recorder.count("started", "flaky") == 1
    finally:
        await first.__aexit__()
        if second.port:
            await second.__aexit__()
    span = next(s for s in spans.get_finished_spans() if s.name == "execute_tool flaky")
    resend = [dict(e.attributes or {}) for e in span.events if e.name == "hangguard.mcp.resend"]
    assert resend and {e["hangguard.mcp.resend.rule"] for e in resend} == {"not_sent"}
    assert not [e for e in span.events if e.name == "hangguard.mcp.resend_refused"]


def test_every_transport_has_one_entry_and_one_opener() -> None:
    # Adding a transport is one entry in TRANSPORTS plus its opener: the two stay in step,
    # and every name and alias resolves to its entry.
    from hangguard.mcp import _session, _target

    assert set(_session._OPENERS) == set(_target.TRANSPORTS)
    for spec in _target.TRANSPORTS.values():
        for alias in (spec.name, *spec.aliases):
            assert _target._normalise_transport(alias.upper(), "transport") == spec.name
    with pytest.raises(ValueError, match="transport must be 'auto' or one of 'streamable-http'"):
        _target._normalise_transport("websocket", "transport")
