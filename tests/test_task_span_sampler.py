"""``hangguard.task.name`` on task spans, and whether the sampler sees it at start.

A sampler that may read attributes gets the name at the span's start (the spec's advice);
with the SDK's own samplers, which decide on the parent and the trace id alone, it is set
right after the start, which costs less. Either way the finished span carries it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

import hangguard
from hangguard import _spans


class Recording(Sampler):
    """Samples everything and keeps the attributes each task span was started with."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: object = None,
    ) -> SamplingResult:
        if name.startswith("task "):
            with self._lock:
                self.seen[name] = dict(attributes or {})
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "Recording"


class Pretending(Recording):
    """Describes itself as the SDK's AlwaysOnSampler: alone, its class gives it away."""

    def get_description(self) -> str:
        return "AlwaysOnSampler"


class OwnParentBased(ParentBased):
    """A ParentBased of the user's: it may read attributes, whatever it describes."""


def _provider(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize(
    ("sampler", "blind"),
    [
        (DEFAULT_ON, True),
        (ALWAYS_ON, True),
        (ALWAYS_OFF, True),
        (TraceIdRatioBased(0.5), True),
        (ParentBased(TraceIdRatioBased(0.25)), True),
        (Recording(), False),
        (Pretending(), False),
        (ParentBased(ALWAYS_ON, local_parent_sampled=Recording()), False),
        (ParentBased(ParentBased(ALWAYS_ON)), False),  # nested: not told apart, so at start
        (OwnParentBased(ALWAYS_ON), False),
    ],
)
def test_which_samplers_are_taken_to_ignore_attributes(sampler: Sampler, blind: bool) -> None:
    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    assert _spans._sampler_ignores_attributes(tracer) is blind


async def test_an_attribute_reading_sampler_sees_the_task_name_at_start() -> None:
    sampler = Recording()
    provider, exporter = _provider(sampler)

    async def work() -> int:
        return 1

    with hangguard.use_providers(tracer_provider=provider):
        g = hangguard.TaskGroup("sampled")
        g.submit_named("first", work)
        g.submit(work)
        assert await g.join() == [1, 1]
        unnamed = g.task_name(1)
    assert sampler.seen["task first"] == {"hangguard.task.name": "first"}
    assert sampler.seen[f"task {unnamed}"] == {"hangguard.task.name": unnamed}
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["task first"].attributes == {"hangguard.task.name": "first"}


def test_a_thread_group_task_name_reaches_an_attribute_reading_sampler() -> None:
    sampler = Recording()
    provider, exporter = _provider(sampler)
    with hangguard.use_providers(tracer_provider=provider):
        g = hangguard.ThreadGroup("sampled")
        g.submit_named("blocking", lambda: 2)
        assert g.join() == [2]
    assert sampler.seen["task blocking"] == {"hangguard.task.name": "blocking"}
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["task blocking"].attributes == {"hangguard.task.name": "blocking"}


@pytest.mark.parametrize("sampler", [DEFAULT_ON, TraceIdRatioBased(1.0)])
async def test_with_the_sdk_samplers_the_span_still_carries_the_name(sampler: Sampler) -> None:
    provider, exporter = _provider(sampler)

    async def work() -> int:
        return 3

    with hangguard.use_providers(tracer_provider=provider):
        g = hangguard.TaskGroup("plain")
        g.submit_named("one", work)
        t = hangguard.ThreadGroup("plain threads")
        t.submit_named("two", lambda: 4)
        assert await g.join() == [3]
        assert t.join() == [4]
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["task one"].attributes == {"hangguard.task.name": "one"}
    assert finished["task two"].attributes == {"hangguard.task.name": "two"}
