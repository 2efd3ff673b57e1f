"""McpClient: arguments, configuration, the deadline on the wire, retries, tracing, concurrency.

The fault matrix (every failure on every transport) is in test_mcp_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import mcp
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import hangguard
from hangguard.mcp._capture import redact
from hangguard.testing.chaos import Blackhole, ChaosServer, HttpFault, closed_port_url
from mcp_helpers import LeakCheck, eventually, within


def finished(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


# --- arguments, checked at the call that takes them ------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"server": "ftp://example.com/mcp"}, ValueError, "server"),
        ({"server": "python -m my_server"}, ValueError, "shlex.split"),
        ({"server": []}, TypeError, "server"),
        ({"server": 42}, TypeError, "server"),
        ({"server": "http://h/mcp", "transport": "websocket"}, ValueError, "transport"),
        ({"server": "http://h/mcp", "transport": "stdio"}, ValueError, "transport"),
        ({"server": ["my-server"], "transport": "sse"}, ValueError, "transport"),
        ({"server": "http://h/mcp", "timeout": -1}, ValueError, "timeout"),
        ({"server": "http://h/mcp", "timeout": math.nan}, ValueError, "timeout"),
        ({"server": "http://h/mcp", "connect_timeout": "10"}, TypeError, "connect_timeout"),
        ({"server": "http://h/mcp", "retry": "3"}, TypeError, "retry"),
        ({"server": "http://h/mcp", "retry": 0}, ValueError, "attempts"),
        ({"server": "http://h/mcp", "capture_limit": 0}, ValueError, "capture_limit"),
        ({"server": "http://h/mcp", "protocol": "2024-11-05"}, ValueError, "protocol"),
        ({"server": "http://h/mcp", "headers": {"x": 1}}, TypeError, "headers"),
        ({}, TypeError, "name= and config="),
        ({"name": "search", "config": {"mcpServers": {}}}, hangguard.ConfigError, "'search'"),
        ({"name": "s", "config": {"s": {"cmd": "x"}}}, ValueError, "config['s']"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names.replace("[", r"\[").replace("(", r"\(")):
        hangguard.mcp.McpClient(**kwargs)


def test_servers_resolve_to_transports() -> None:
    http = hangguard.mcp.McpClient("https://user:pw@example.com:8443/mcp?key=s3cret")
    assert http.transport == "streamable-http"
    assert http.server == "https://example.com:8443/mcp"  # no credentials, no query
    assert hangguard.mcp.McpClient("http://example.com/sse").transport == "sse"
    assert hangguard.mcp.McpClient("http://example.com/events", transport="sse").transport == "sse"
    stdio = hangguard.mcp.McpClient(["my-server", "--flag", "two words"])
    assert stdio.transport == "stdio"
    assert stdio.server == "my-server --flag 'two words'"
    params = mcp.StdioServerParameters(command="my-server", args=["-v"])
    assert hangguard.mcp.McpClient(params).server == "my-server -v"


def test_seed_style_name_and_config() -> None:
    config = {
        "mcpServers": {
            "search": {"url": "http://127.0.0.1:1/sse", "headers": {"Authorization": "t"}},
            "local": {"command": "my-server", "args": ["--stdio"], "env": {"K": "v"}},
            "pinned": {"url": "http://127.0.0.1:1/x", "transport": "sse"},
        }
    }
    search = hangguard.mcp.McpClient(name="search", config=config, timeout=30)
    assert (search.name, search.transport) == ("search", "sse")
    assert "'search'" in repr(search)
    assert hangguard.mcp.McpClient(name="local", config=config).transport == "stdio"
    assert hangguard.mcp.McpClient(name="pinned", config=config).transport == "sse"


async def test_env_timeout_is_read_at_the_call_and_a_bad_value_names_it(
    chaos: ChaosServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_MCP_TIMEOUT", "half a second")
    client = hangguard.mcp.McpClient(chaos.url)  # constructing reads nothing
    async with client:
        with pytest.raises(hangguard.ConfigError, match="HANGGUARD_MCP_TIMEOUT") as info:
            await client.call_tool("echo")
        assert info.value.name == "HANGGUARD_MCP_TIMEOUT"
        monkeypatch.setenv("HANGGUARD_MCP_TIMEOUT", "500ms")
        with within(0.5), pytest.raises(hangguard.DeadlineExceeded) as timed_out:
            await client.call_tool("hang")
    assert timed_out.value.budget == 0.5


async def test_env_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_MCP_CONNECT_TIMEOUT", "0.5")
    with Blackhole() as hole, within(0.5), pytest.raises(hangguard.McpConnectError, match=r"0\.5s"):
        async with hangguard.mcp.McpClient(hole.url):
            pass


def test_redact_hides_secret_looking_keys_at_any_depth() -> None:
    value = {
        "query": "q",
        "api_key": "k",
        "Authorization": "Bearer x",
        "nested": [{"accessToken": "t", "ok": 1}, {"client_secret": "s", "PASSWORD": "p"}],
    }
    assert redact(value) == {
        "query": "q",
        "api_key": "[REDACTED]",
        "Authorization": "[REDACTED]",
        "nested": [
            {"accessToken": "[REDACTED]", "ok": 1},
            {"client_secret": "[REDACTED]", "PASSWORD": "[REDACTED]"},
        ],
    }


# --- calls ---------------------------------------------------------------------------


async def test_call_list_and_close(chaos: ChaosServer) -> None:
    leaks = LeakCheck(chaos.port)
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        assert client.connected and client.protocol_version is not None
        result = await client.call_tool("echo", {"text": "hello"})
        assert result.structured_content == {"result": "hello"}
        tools = {tool.name for tool in await client.list_tools()}
        assert {"echo", "sleep", "hang", "raise", "is_error", "flaky", "deadline_info"} <= tools
        assert isinstance(client.sdk_client, mcp.Client)
    assert not client.connected
    await leaks.verify()


async def test_calls_connect_lazily_and_aclose_closes(chaos: ChaosServer) -> None:
    leaks = LeakCheck(chaos.port)
    client = hangguard.mcp.McpClient(chaos.url, timeout=5)
    assert not client.connected
    assert (await client.call_tool("echo", {"text": "x"})).structured_content == {"result": "x"}
    await client.aclose()
    await leaks.verify()


async def test_a_connect_error_within_a_call_names_the_tool() -> None:
    client = hangguard.mcp.McpClient(closed_port_url(), retry=1)
    with pytest.raises(hangguard.McpConnectError, match="calling 'search'") as info:
        await client.call_tool("search")
    assert info.value.tool == "search"
    await client.aclose()


async def test_a_closed_client_refuses_calls_until_connected_again(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url) as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await client.call_tool("echo")
    async with client:  # an explicit connect reopens it
        assert (await client.call_tool("echo", {"text": "again"})).structured_content == {
            "result": "again"
        }


async def test_connect_errors_come_out_of_async_with_as_one_exception() -> None:
    url = closed_port_url()
    with pytest.raises(hangguard.McpConnectError) as info:
        async with hangguard.mcp.McpClient(url, retry=1):
            pass
    # One clear exception naming the server, the root cause chained (no ExceptionGroup).
    assert url in str(info.value) and info.value.server == url
    assert not isinstance(info.value.__cause__, BaseExceptionGroup)


async def test_the_enclosing_deadline_binds_when_it_is_tighter(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client:
        with within(0.5), pytest.raises(hangguard.DeadlineExceeded) as info:
            async with hangguard.deadline(0.5, name="search-all"):
                await client.call_tool("hang")
    assert info.value.deadline_name == "search-all"
    await chaos.wait_for("cancelled", "hang")


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_headers_reach_the_server(
    kind: str, chaos: ChaosServer, chaos_sse: ChaosServer
) -> None:
    url = chaos_sse.url if kind == "sse" else chaos.url
    headers = {"Authorization": "Bearer s3cret", "X-Tenant": "acme"}
    async with hangguard.mcp.McpClient(url, headers=headers) as client:
        result = await client.call_tool("request_headers")
    assert result.structured_content is not None
    assert {"authorization", "x-tenant"} <= set(result.structured_content["result"])


async def test_a_503_to_the_protocol_probe_is_reported_not_hidden(
    chaos: ChaosServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Known mcp 2.3 behaviour: any error to server/discover means "legacy server" to it.
    chaos.fault = HttpFault("status", status=503, methods={"server/discover"}, first=1)
    async with hangguard.mcp.McpClient(chaos.url) as client:
        assert client.protocol_version == "2025-11-25"
        await client.call_tool("echo")
    (record,) = [r for r in caplog.records if "protocol probe" in r.getMessage()]
    assert "HTTP 503" in record.getMessage() and record.levelname == "WARNING"


# --- the deadline across the wire ------------------------------------------------------


async def test_the_tool_sees_the_callers_remaining_budget(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client, hangguard.deadline(1.5):
        result = await client.call_tool("deadline_info")
    info = result.structured_content
    assert info is not None
    assert 1000 < info["timeout_ms"] <= 1500
    # The handler runs under that budget (less the time the request took to arrive).
    assert 0.9 < info["remaining_s"] <= 1.5


async def test_without_a_deadline_the_call_timeout_is_sent(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=7) as client:
        result = await client.call_tool("deadline_info")
    assert result.structured_content is not None
    assert 6000 < result.structured_content["timeout_ms"] <= 7000


# --- retries -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_backoff")
async def test_a_timed_out_attempt_is_retried_within_the_budget(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    policy = hangguard.RetryPolicy(attempts=3, attempt_timeout=0.4)
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=policy) as client:
        with within(0.4):
            result = await client.call_tool("flaky", {"key": "attempt-timeout", "mode": "hang"})
    assert result.structured_content == {"result": "ok after 1 failure(s)"}
    await chaos.wait_for("cancelled", "flaky")  # the first attempt's handler
    (span,) = finished(spans, "execute_tool flaky")
    assert [e.name for e in span.events].count("hangguard.retry") == 1


async def test_tool_errors_are_not_retried_even_by_a_retry_everything_policy(
    chaos: ChaosServer,
) -> None:
    policy = hangguard.RetryPolicy(attempts=3)  # on=Exception: McpClient narrows it
    async with hangguard.mcp.McpClient(chaos.url, retry=policy, raise_on_error=True) as client:
        with pytest.raises(hangguard.McpToolError):
            await client.call_tool("flaky", {"key": "tool-error", "failures": 1})
    assert chaos.recorder.count("started", "flaky") == 1


@pytest.mark.usefixtures("no_backoff")
async def test_the_retry_budget_holds_under_a_failing_server(chaos: ChaosServer) -> None:
    chaos.fault = HttpFault("status", status=503, methods={"tools/call"})
    calls, attempts = 10, 5
    async with hangguard.mcp.McpClient(chaos.url, timeout=5, retry=attempts) as client:
        with hangguard.retry_budget(ratio=0.2, floor=3) as budget:
            results = await asyncio.gather(
                *(client.call_tool("echo") for _ in range(calls)), return_exceptions=True
            )
    assert all(isinstance(r, hangguard.McpConnectError) for r in results)
    requests = chaos.recorder.count("fault", "tools/call")
    # Without the budget: calls * attempts = 50 requests.
    assert budget.retries <= budget.allowed
    assert requests == calls + budget.retries <= calls + 3 + 0.2 * calls


# --- tracing -------------------------------------------------------------------------


async def test_span_tree_and_attributes(chaos: ChaosServer, spans: InMemorySpanExporter) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        await client.call_tool("echo", {"text": "traced"})
    (tool,) = finished(spans, "execute_tool echo")
    assert tool.kind is SpanKind.INTERNAL
    assert tool.attributes is not None
    attrs = dict(tool.attributes)
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "echo"
    assert attrs["mcp.method.name"] == "tools/call"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == chaos.port
    assert attrs["network.transport"] == "tcp"
    assert 4 < float(attrs["hangguard.timeout_s"]) <= 5  # type: ignore[arg-type]
    assert "gen_ai.tool.call.arguments" not in attrs  # not recorded unless asked
    (sent,) = finished(spans, "MCP send tools/call echo")
    (served,) = finished(spans, "tools/call echo")
    assert sent.parent is not None and sent.parent.span_id == tool.context.span_id
    assert served.parent is not None and served.parent.span_id == sent.context.span_id
    assert served.kind is SpanKind.SERVER
    assert tool.context.trace_id == sent.context.trace_id == served.context.trace_id
    assert tool.status.status_code is not StatusCode.ERROR


async def test_capture_content_redacts_and_caps(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, capture_content=True, capture_limit=60) as client:
        await client.call_tool("echo", {"text": "x" * 200, "api_key": "s3cret"})
    (span,) = finished(spans, "execute_tool echo")
    assert span.attributes is not None
    args = str(span.attributes["gen_ai.tool.call.arguments"])
    result = str(span.attributes["gen_ai.tool.call.result"])
    assert "s3cret" not in args
    assert args.endswith("more characters]") and len(args) < 100
    assert result.startswith('{"') and "more characters]" in result


async def test_capture_content_records_whole_small_values(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, capture_content=True) as client:
        await client.call_tool("echo", {"text": "hi", "password": "pw"})
    (span,) = finished(spans, "execute_tool echo")
    assert span.attributes is not None
    assert json.loads(str(span.attributes["gen_ai.tool.call.arguments"])) == {
        "text": "hi",
        "password": "[REDACTED]",
    }
    assert json.loads(str(span.attributes["gen_ai.tool.call.result"]))["structuredContent"] == {
        "result": "hi"
    }


async def test_a_cancelled_call_is_an_event_not_an_error(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=30) as client:
        call = asyncio.create_task(client.call_tool("hang"))
        await chaos.wait_for("started", "hang")
        call.cancel("the user gave up")
        with pytest.raises(asyncio.CancelledError):
            await call
    await chaos.wait_for("cancelled", "hang")
    (span,) = finished(spans, "execute_tool hang")
    assert span.status.status_code is not StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "hangguard.cancelled"]
    assert event.attributes is not None
    assert event.attributes["hangguard.cancel.cause"] == "the user gave up"


# --- the server's own limit and the JSON response mode ----------------------------------


async def test_server_max_timeout_caps_what_a_client_asks_for(spans: InMemorySpanExporter) -> None:
    async with (
        ChaosServer(max_timeout=0.3) as capped,
        hangguard.mcp.McpClient(capped.url, timeout=30) as client,
    ):
        with within(0.3), pytest.raises(hangguard.McpCallError) as info:
            await client.call_tool("hang")
        await capped.wait_for("cancelled", "hang")
    assert info.value.code == -32001 and "tools/call hang" in str(info.value)
    (served,) = finished(spans, "tools/call hang")
    assert served.attributes is not None and served.attributes["error.type"] == "-32001"
    (event,) = [e for e in served.events if e.name == "hangguard.deadline_exceeded"]
    assert event.attributes is not None
    assert event.attributes["hangguard.deadline.budget_s"] == 0.3


async def test_json_response_mode_needs_the_middleware_to_stop_the_handler() -> None:
    # Known mcp 2.3 behaviour: with json_response on the 2026-07-28 protocol, the
    # client's cancellation does not reach the handler; only DeadlineMiddleware stops it.
    async with ChaosServer(json_response=True, deadline_middleware=False) as bare:
        async with hangguard.mcp.McpClient(bare.url, timeout=0.5) as client:
            with pytest.raises(hangguard.DeadlineExceeded):
                await client.call_tool("hang")
            # A full round trip after the timeout, with a wide budget of its own: the
            # session must still answer, not answer within the hang's 0.5 s.
            await client.call_tool("echo", timeout=30)
        assert bare.recorder.count("started", "hang") == 1
        assert bare.recorder.count("cancelled", "hang") == 0  # still hanging
    async with (
        ChaosServer(json_response=True) as guarded,
        hangguard.mcp.McpClient(guarded.url, timeout=0.5) as client,
    ):
        with pytest.raises(hangguard.DeadlineExceeded):
            await client.call_tool("hang")
        await guarded.wait_for("cancelled", "hang")


# --- many calls at once --------------------------------------------------------------


async def test_100_concurrent_calls_with_one_hanging(chaos: ChaosServer) -> None:
    """One hanging call holds none of the 99 others sharing its client.

    No timing: the 99 echoes must all finish while the hanging call is still pending
    (it is on the server, which says so), and cancelling it reaches the server. How
    fast they finish is measured in bench/mcp_call.py.
    """

    async def echo(i: int) -> None:
        result = await client.call_tool("echo", {"text": str(i)})
        assert result.structured_content == {"result": str(i)}

    async with hangguard.mcp.McpClient(chaos.url, timeout=60) as client:
        await client.call_tool("echo")  # warm: the SDK lists tools after a first call
        hang = asyncio.create_task(client.call_tool("hang"))
        await chaos.wait_for("started", "hang")
        async with asyncio.TaskGroup() as tg:
            for i in range(99):
                tg.create_task(echo(i))
        assert not hang.done(), "the hanging call ended before the 99 echoes"
        hang.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hang
    await chaos.wait_for("cancelled", "hang")


# --- metrics -------------------------------------------------------------------------


async def test_each_call_is_timed_in_the_mcp_duration_histogram(
    chaos: ChaosServer, metric_reader: InMemoryMetricReader
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        await client.call_tool("echo", {"text": "timed"})
        await client.call_tool("is_error")
        with pytest.raises(hangguard.McpCallError):
            await client.call_tool("raise", {"code": -32602})
    data = metric_reader.get_metrics_data()
    points: dict[tuple[Any, Any], int] = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "mcp.client.operation.duration":
                    continue
                for p in metric.data.data_points:
                    attrs = dict(p.attributes or {})
                    assert attrs["mcp.method.name"] == "tools/call"
                    key = (attrs["gen_ai.tool.name"], attrs.get("error.type"))
                    points[key] = points.get(key, 0) + p.count  # type: ignore[union-attr]
    assert points == {("echo", None): 1, ("is_error", "tool_error"): 1, ("raise", "-32602"): 1}


# --- the known tool list -------------------------------------------------------------------


async def test_an_unknown_tool_is_a_typed_error_before_anything_is_sent(
    chaos: ChaosServer, spans: InMemorySpanExporter
) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        assert client.tools is None
        tools = await client.list_tools()
        assert client.tools is not None and {t.name for t in client.tools} == {
            t.name for t in tools
        }
        chaos.fault = HttpFault("status", status=500)  # anything sent now would fail
        with pytest.raises(hangguard.McpUnknownToolError) as info:
            await client.call_tool("ehco", {"text": "x"})
        chaos.fault = None
    err = info.value
    assert isinstance(err, hangguard.McpCallError) and err.code == -32602
    assert err.tool == "ehco" and "echo" in err.offered and "'ehco'" in str(err)
    assert "echo" in str(err)  # the offered names are in the message
    assert chaos.recorder.count("fault") == 0
    span = finished(spans, "execute_tool ehco")[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "-32602"


async def test_without_a_tool_list_an_unknown_tool_goes_to_the_server(chaos: ChaosServer) -> None:
    async with hangguard.mcp.McpClient(chaos.url, timeout=5) as client:
        outcome: Any
        try:
            outcome = await client.call_tool("ehco")
        except hangguard.McpCallError as exc:  # what the server answers, whichever way
            outcome = exc
    assert not isinstance(outcome, hangguard.McpUnknownToolError)
    assert isinstance(outcome, hangguard.McpCallError) or outcome.is_error
    assert chaos.recorder.count("started") == 0


def test_idempotent_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="idempotent_tools"):
        hangguard.mcp.McpClient("http://127.0.0.1:1/mcp", idempotent_tools="echo")
    with pytest.raises(TypeError, match="idempotent_tools"):
        hangguard.mcp.McpClient("http://127.0.0.1:1/mcp", idempotent_tools=[1])  # type: ignore[list-item]


@pytest.mark.parametrize("kind", ["http-legacy", "sse"])
async def test_the_cancel_notice_carries_the_trace_context_so_the_server_span_joins_the_trace(
    chaos: ChaosServer, chaos_sse: ChaosServer, spans: InMemorySpanExporter, kind: str
) -> None:
    # The protocols that cancel with a notice (the 2026-07-28 one closes the stream).
    server = chaos_sse if kind == "sse" else chaos
    protocol = "legacy" if kind == "http-legacy" else "auto"

    def notice() -> list[ReadableSpan]:
        return finished(spans, "notifications/cancelled")

    async with hangguard.mcp.McpClient(server.url, timeout=0.3, protocol=protocol) as client:
        with pytest.raises(hangguard.DeadlineExceeded):
            await client.call_tool("hang")
        await server.wait_for("cancelled", "hang")
        # The SDK's server cancels the handler as the notice arrives and only then spawns
        # the task whose span records the notice; leaving the client now ends the SSE
        # session, and with it that task, often before it began (the notice itself was
        # received: the handler was cancelled). So the span is awaited while connected.
        await eventually(lambda: bool(notice()), "the server's span for the cancel notice")
    (call,) = finished(spans, "execute_tool hang")
    assert notice()[0].context.trace_id == call.context.trace_id
