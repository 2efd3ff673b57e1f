"""Shared fixtures.

OpenTelemetry lets a process set the global tracer provider once, so the SDK provider
with an in-memory exporter is installed lazily, once per session, by the first test that
asks for ``spans``; tests that must run with no SDK at all run in a subprocess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The MCP fixtures (chaos servers, leak checks) live in tests/mcp_helpers.py.
pytest_plugins = ["mcp_helpers"]


def _xdist_group(item: pytest.Item) -> str:
    path = item.path.resolve()
    here = Path(__file__).resolve().parent
    # One Jaeger stack and one Ray per session: all of e2e/ runs in one worker, all of
    # on_ray/ in one worker; any other file is a unit of its own (its module fixtures).
    for shared in ("e2e", "on_ray"):
        if path.is_relative_to(here / shared):
            return shared
    return path.relative_to(here).as_posix()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under `-n 2 --dist loadgroup`, the unit xdist hands a worker is a group.
    # tryfirst: xdist reads the marks in its own hook of the same name.
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))


def pytest_collection_finish(session: pytest.Session) -> None:
    # The docs examples mostly wait (timeouts firing, servers starting): started now, they
    # run while the rest of the suite does, and test_docs only collects their outcomes.
    # Under xdist every worker collects every test but only one runs test_docs: there its
    # module fixture starts them.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.nodeid.startswith("tests/test_docs.py::test_example_") for item in session.items):
        import test_docs

        test_docs.start_examples()


def pytest_sessionfinish(session: pytest.Session) -> None:
    test_docs = sys.modules.get("test_docs")
    if test_docs is not None:
        test_docs.stop_examples()


_exporter: InMemorySpanExporter | None = None


def _global_exporter() -> InMemorySpanExporter:
    global _exporter
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    return _exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter behind the global SDK provider, emptied for this test."""
    exporter = _global_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


_metric_reader: InMemoryMetricReader | None = None


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    """The in-memory reader behind a global SDK meter provider, installed once per session.

    Counters and histograms use delta temporality and the reader is drained here, so what
    a test collects is what it recorded.
    """
    global _metric_reader
    if _metric_reader is None:
        delta = AggregationTemporality.DELTA
        _metric_reader = InMemoryMetricReader(
            preferred_temporality={Counter: delta, Histogram: delta}
        )
        metrics.set_meter_provider(MeterProvider(metric_readers=[_metric_reader]))
    _metric_reader.get_metrics_data()
    return _metric_reader


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``host:port`` on 127.0.0.1 of a socket that accepts connections and never answers.

    Like a collector that hangs: connecting works, every request then waits forever.
    """
    from hangguard.testing.chaos import Blackhole

    with Blackhole() as hole:
        yield f"127.0.0.1:{hole.port}"


@pytest.fixture
def closed_port() -> str:
    """``host:port`` on 127.0.0.1 where nothing listens: connections are refused."""
    from urllib.parse import urlsplit

    from hangguard.testing.chaos import closed_port_url

    return urlsplit(closed_port_url()).netloc
