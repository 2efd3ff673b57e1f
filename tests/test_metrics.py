"""Metrics through the OTel API: what each record_* call counts, and nothing without an SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import defaultdict
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import hangguard
from hangguard import _metrics
from hangguard._semconv import (
    ATTR_DEADLINE_NAME,
    ATTR_ERROR_TYPE,
    ATTR_GEN_AI_TOOL_NAME,
    ATTR_MCP_METHOD_NAME,
    ATTR_RETRY_NAME,
    ATTR_TASK_OUTCOME,
    METRIC_DEADLINE_EXCEEDED,
    METRIC_MCP_CLIENT_OPERATION_DURATION,
    METRIC_RETRIES,
    METRIC_RETRY_BUDGET_REFUSALS,
    METRIC_TASKS,
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_TIMEOUT,
    TRACER_NAME,
)
from hangguard.testing import disable_backoff

Points = dict[str, list[tuple[dict[str, Any], Any]]]


def collect(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    """hangguard's data points by metric name (drains the delta reader), and their units."""
    points: Points = defaultdict(list)
    units: dict[str, str] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            if sm.scope.name != TRACER_NAME:
                continue
            for metric in sm.metrics:
                units[metric.name] = metric.unit or ""
                for p in metric.data.data_points:
                    points[metric.name].append((dict(p.attributes or {}), p))
    return points, units


def counts(points: Points, name: str, key: str) -> dict[Any, int]:
    out: dict[Any, int] = defaultdict(int)
    for attrs, p in points.get(name, []):
        out[attrs.get(key)] += p.value
    return dict(out)


def test_task_outcomes_are_counted_by_outcome(metric_reader: InMemoryMetricReader) -> None:
    _metrics.record_task_outcome(OUTCOME_OK, 3)
    _metrics.record_task_outcome(OUTCOME_FAILED)
    _metrics.record_task_outcome(OUTCOME_CANCELLED, 2)
    _metrics.record_task_outcome(OUTCOME_TIMEOUT)
    points, units = collect(metric_reader)
    assert counts(points, METRIC_TASKS, ATTR_TASK_OUTCOME) == {
        "ok": 3,
        "failed": 1,
        "cancelled": 2,
        "timeout": 1,
    }
    assert units[METRIC_TASKS] == "{task}"


def test_unknown_outcome_is_refused_naming_it(metric_reader: InMemoryMetricReader) -> None:
    with pytest.raises(ValueError, match="'succeeded'"):
        _metrics.record_task_outcome("succeeded")
    points, _ = collect(metric_reader)
    assert METRIC_TASKS not in points


def test_retries_and_refusals_carry_the_retry_name(metric_reader: InMemoryMetricReader) -> None:
    _metrics.record_retry("fetch")
    _metrics.record_retry("fetch")
    _metrics.record_retry()
    _metrics.record_retry_refused("fetch")
    points, _ = collect(metric_reader)
    assert counts(points, METRIC_RETRIES, ATTR_RETRY_NAME) == {"fetch": 2, None: 1}
    assert counts(points, METRIC_RETRY_BUDGET_REFUSALS, ATTR_RETRY_NAME) == {"fetch": 1}


async def test_a_deadline_that_fires_is_counted_by_name(
    metric_reader: InMemoryMetricReader,
) -> None:
    never = asyncio.Event()
    with pytest.raises(hangguard.DeadlineExceeded):
        async with hangguard.deadline(0.01, name="tight"):
            await never.wait()
    async with hangguard.deadline(5, name="roomy"):
        pass
    points, _ = collect(metric_reader)
    assert counts(points, METRIC_DEADLINE_EXCEEDED, ATTR_DEADLINE_NAME) == {"tight": 1}


def test_mcp_duration_follows_the_semantic_conventions(
    metric_reader: InMemoryMetricReader,
) -> None:
    _metrics.record_mcp_duration(0.3, method="tools/call", tool="search")
    _metrics.record_mcp_duration(
        12.0, method="tools/call", tool="search", error_type="hangguard.McpCallError"
    )
    _metrics.record_mcp_duration(0.01, method="initialize")
    points, units = collect(metric_reader)
    assert units[METRIC_MCP_CLIENT_OPERATION_DURATION] == "s"
    by_attrs = {
        tuple(sorted(attrs.items())): p for attrs, p in points[METRIC_MCP_CLIENT_OPERATION_DURATION]
    }
    ok = by_attrs[((ATTR_GEN_AI_TOOL_NAME, "search"), (ATTR_MCP_METHOD_NAME, "tools/call"))]
    assert ok.count == 1
    assert ok.sum == pytest.approx(0.3)
    assert tuple(ok.explicit_bounds) == _metrics.MCP_DURATION_BUCKETS
    failed = by_attrs[
        (
            (ATTR_ERROR_TYPE, "hangguard.McpCallError"),
            (ATTR_GEN_AI_TOOL_NAME, "search"),
            (ATTR_MCP_METHOD_NAME, "tools/call"),
        )
    ]
    assert failed.count == 1
    assert ((ATTR_MCP_METHOD_NAME, "initialize"),) in by_attrs


def test_no_sdk_records_nothing_and_loads_no_sdk() -> None:
    # A fresh interpreter: this session installs a global meter provider. The cost of
    # recording with no SDK is measured by the benchmarks, not here.
    code = textwrap.dedent(
        """
        import sys
        from opentelemetry import metrics
        from hangguard import _metrics, _spans
        for _ in range(1000):
            _metrics.record_task_outcome("ok")
            _metrics.record_retry("x")
            _metrics.record_mcp_duration(0.1, method="tools/call", tool="t")
        _spans.record_deadline_exceeded("d", 1.0)
        assert "opentelemetry.sdk" not in sys.modules, "the SDK was imported"
        # Instruments made on the API's proxy start recording once a provider arrives.
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _metrics.record_task_outcome("ok", 3)
        data = reader.get_metrics_data()
        points = [
            p.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "hangguard.tasks"
            for p in m.data.data_points
        ]
        assert points == [3], points
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


async def test_task_group_counts_each_task_by_outcome(metric_reader: InMemoryMetricReader) -> None:
    never = asyncio.Event()

    async def ok() -> int:
        return 1

    async def boom() -> None:
        raise ValueError("boom")

    async def hang() -> None:
        await never.wait()

    # Tasks take their first step in submit order: ok ends, hang waits, boom fails and
    # cancels hang.
    with pytest.raises(ValueError, match="boom"):
        async with hangguard.TaskGroup("fail-fast") as g:
            g.submit(ok)
            g.submit(hang)
            g.submit(boom)
    timed = hangguard.TaskGroup("timed", timeout=0.01)
    timed.submit(hang)
    with pytest.raises(hangguard.JoinTimeout):
        await timed.join()
    points, _ = collect(metric_reader)
    assert counts(points, METRIC_TASKS, ATTR_TASK_OUTCOME) == {
        "ok": 1,
        "failed": 1,
        "cancelled": 1,
        "timeout": 1,
    }


async def test_retries_and_refusals_are_counted_where_they_happen(
    metric_reader: InMemoryMetricReader,
) -> None:
    failures = {"flaky": 1, "down": 10}

    @hangguard.retry(attempts=3, on=ConnectionError)
    async def call(name: str) -> str:
        if failures[name] > 0:
            failures[name] -= 1
            raise ConnectionError(name)
        return name

    with disable_backoff():
        assert await call("flaky") == "flaky"
        # A budget with no retries in it: the first retry of "down" is refused.
        with pytest.raises(ConnectionError):
            async with hangguard.retry_budget(ratio=0.0, floor=0):
                await call("down")
    points, _ = collect(metric_reader)
    assert sum(counts(points, METRIC_RETRIES, ATTR_RETRY_NAME).values()) == 1
    assert sum(counts(points, METRIC_RETRY_BUDGET_REFUSALS, ATTR_RETRY_NAME).values()) == 1
