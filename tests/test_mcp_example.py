"""flowllm's op of examples/company_segment_factor.py against the chaos server.

One MCP source answers, the other never does: the op returns the partial results within
its budget, and the trace is one tree from the op down to the MCP server's span.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from hangguard.testing.chaos import ChaosServer, HttpFault
from mcp_helpers import LeakCheck, within

QUERIES = ["segment revenue", "gross margin", "headcount"]
# Long enough for the healthy server's answers on a loaded machine; far shorter than the
# 30 s of the other bound, so the test tells which one cut the backup off.
MCP_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def example() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "company_segment_factor.py"
    spec = importlib.util.spec_from_file_location("company_segment_factor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def backup() -> Iterator[ChaosServer]:
    server = ChaosServer(fault=HttpFault("never_answer", methods={"tools/call"})).start()
    yield server
    server.stop()


def parent(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (found,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return found


async def test_partial_results_within_the_mcp_timeout(
    example: ModuleType, chaos: ChaosServer, backup: ChaosServer, spans: InMemorySpanExporter
) -> None:
    leaks = LeakCheck(chaos.port)
    # The MCP timeout cuts the backup's calls off, long before the join's 30 s.
    async with example.search_sources(chaos.url, backup.url, mcp_timeout=MCP_TIMEOUT) as sources:
        op = example.build_op(sources, join_timeout=30.0)
        with within(MCP_TIMEOUT):
            found = await op.async_call(queries=QUERIES)
    await leaks.verify()
    assert sorted(found) == sorted(QUERIES)

    finished = list(spans.get_finished_spans())
    (op_span,) = [s for s in finished if s.name == "CompanySegmentFactorOp"]
    served = [s for s in finished if s.name == "tools/call echo"]
    assert len(served) == 3  # the backup never ran a handler
    for server_span in served:
        client_span = parent(server_span, finished)
        assert client_span.name == "MCP send tools/call echo"
        tool_span = parent(client_span, finished)
        assert tool_span.name == "execute_tool echo"
        task_span = parent(tool_span, finished)
        assert task_span.name.startswith("task ")
        group_span = parent(task_span, finished)
        assert group_span.name == "group CompanySegmentFactorOp"
        assert parent(group_span, finished) is op_span
    # Every span of the calls is in the op's trace (the clients' connects, made before
    # the op, are not).
    calls = ("tools/call", "MCP send tools/call", "execute_tool", "task ", "group ")
    in_calls = {s.context.trace_id for s in finished if s.name.startswith(calls)}
    assert in_calls == {op_span.context.trace_id}
    timed_out = [
        s
        for s in finished
        if s.name == "execute_tool echo" and s.status.status_code is StatusCode.ERROR
    ]
    assert len(timed_out) == 3
    assert all(s.attributes and s.attributes["error.type"] == "timeout" for s in timed_out)
    assert all(str(backup.port) in str(s.attributes["hangguard.mcp.server"]) for s in timed_out)


async def test_join_timeout_first_still_returns_partial_results(
    example: ModuleType, chaos: ChaosServer, backup: ChaosServer
) -> None:
    # The join's timeout cuts the backup's calls off, long before the MCP timeout.
    async with example.search_sources(chaos.url, backup.url, mcp_timeout=30.0) as sources:
        op = example.build_op(sources, join_timeout=MCP_TIMEOUT)
        with within(MCP_TIMEOUT):
            found = await op.async_call(queries=QUERIES)
    assert sorted(found) == sorted(QUERIES)
