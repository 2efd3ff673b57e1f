"""Injected providers: spans and metrics go where the caller says, no global needed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard


async def _ok() -> int:
    return 1


async def test_spans_and_metrics_go_to_the_injected_providers() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    with hangguard.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider):
        group = hangguard.TaskGroup("injected")
        group.submit(_ok)
        group.submit(_ok)
        assert await group.join() == [1, 1]
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["group injected", "task _ok[0]", "task _ok[1]"]
    data = reader.get_metrics_data()
    assert data is not None
    metrics = [
        m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ]
    assert "hangguard.tasks" in metrics
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def test_the_injection_ends_with_the_block_and_reaches_tasks_started_inside() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def inner() -> None:
        group = hangguard.TaskGroup("inner")
        group.submit(_ok)
        await group.join()

    with hangguard.use_providers(tracer_provider=provider):
        task = asyncio.get_running_loop().create_task(inner())
    await task  # started inside the block, so it keeps the injected provider
    assert [s.name for s in exporter.get_finished_spans() if s.name.startswith("group")] == [
        "group inner"
    ]
    exporter.clear()
    await inner()  # outside: the global provider (whatever it is), not ours
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_with_no_provider_anywhere_nothing_records_and_no_sdk_is_loaded() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        import hangguard
        from hangguard import _spans

        async def ok():
            return 1

        async def main():
            group = hangguard.TaskGroup("g")
            group.submit(ok)
            return await group.join()

        assert _spans.get_tracer() is None
        assert asyncio.run(main()) == [1]
        assert "opentelemetry.sdk" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
