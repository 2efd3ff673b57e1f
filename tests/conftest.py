"""Shared fixtures.

OpenTelemetry lets a process set the global tracer provider once, so the SDK provider
with an in-memory exporter is installed lazily, once per session, by the first test that
asks for ``spans``; tests that must run with no SDK at all run in a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
