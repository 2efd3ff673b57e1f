"""The machinery behind the bounded shutdown: a worker thread, a guarded exporter, counters.

Every blocking SDK call (flush, shutdown) runs on :class:`Worker`, one daemon thread
started at setup, so the caller can stop waiting at its timeout. :func:`make_guard` wraps
the span exporter: it counts what happens to each batch and, once the shutdown gave up,
drops instead of waiting (and stops the inner exporter so its retries end);
:func:`make_metric_guard` does the same for the metric exporter. The counts,
with the ended spans :func:`make_counting_processor` counts, are :class:`ExportStats`.

:func:`make_batch_processor` replaces the SDK's ``BatchSpanProcessor``: same settings, but
its queue is ours, so a span it has no room for is counted (the SDK's drops one with a log
line and no count that could be read without its private state). The SDK is imported only
when a guard or processor is built.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._semconv import TRACER_NAME

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        MetricExporter,
        MetricExportResult,
        MetricsData,
    )
    from opentelemetry.sdk.metrics.view import Aggregation
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "Counters",
    "ExportStats",
    "Job",
    "Worker",
    "make_batch_processor",
    "make_counting_processor",
    "register_processor_metric",
    "make_guard",
    "make_metric_guard",
    "takes_no_metrics",
]

_log = logging.getLogger("hangguard")


@dataclass(frozen=True, slots=True)
class ExportStats:
    """Span counts since setup: ended (and sampled), exported, failed to export, dropped.

    ``dropped`` counts the spans the export queue had no room for, those that ended after
    the shutdown, and those a shutdown that gave up left behind. ``pending`` is what is
    still queued or in flight; after a shutdown that timed out it is what the process
    exit loses.
    """

    ended: int
    exported: int
    failed: int
    dropped: int

    @property
    def pending(self) -> int:
        return max(0, self.ended - self.exported - self.failed - self.dropped)


class Counters:
    """The counts behind :class:`ExportStats`, under ``lock``.

    ``dropped`` is every span dropped, for whatever reason; ``queue_full`` and
    ``after_shutdown`` are the ones the batch processor dropped (the rest were dropped by
    the guard once a shutdown gave up), and ``handed`` the ones it passed to the exporter.
    """

    __slots__ = (
        "after_shutdown",
        "dropped",
        "ended",
        "exported",
        "failed",
        "handed",
        "lock",
        "queue_full",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = self.exported = self.failed = self.dropped = 0
        self.queue_full = self.after_shutdown = self.handed = 0

    def snapshot(self) -> ExportStats:
        with self.lock:
            return ExportStats(self.ended, self.exported, self.failed, self.dropped)


class Job:
    """One call handed to :class:`Worker`: ``done`` is set once ``result`` is final."""

    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[], bool]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result = False

    def wait(self, timeout: float) -> bool:
        """``True`` once the job ended within ``timeout`` seconds (``inf``: no limit)."""
        # Event.wait overflows on an infinite timeout; None is its "no limit".
        return self.done.wait(None if math.isinf(timeout) else timeout)


class Worker:
    """One daemon thread that runs blocking SDK calls, so callers can stop waiting.

    Started at setup: at interpreter exit (Python 3.12+) no new thread may start, and the
    exit hook still needs somewhere to run the flush it will not wait for.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hangguard-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = bool(job.fn())
            except Exception:
                _log.exception("hangguard: telemetry flush/shutdown failed")
                job.result = False
            finally:
                job.done.set()
            if job.fn is _stop_marker:
                return

    def submit(self, fn: Callable[[], bool]) -> Job:
        """Queue ``fn`` to run on the thread after the jobs already queued."""
        job = Job(fn)
        self._jobs.put(job)
        return job

    def run(self, fn: Callable[[], bool], timeout: float) -> bool:
        """Run ``fn`` on the thread; ``False`` when it fails or is still running at ``timeout``."""
        job = self.submit(fn)
        return job.wait(timeout) and job.result

    def stop(self) -> None:
        """End the thread once the jobs queued so far have run."""
        self.submit(_stop_marker)


def _stop_marker() -> bool:
    return True


def make_guard(inner: SpanExporter, counters: Counters) -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class _GuardedExporter(SpanExporter):
        """Counts what happens to each batch and, once abandoned, drops instead of waiting."""

        def __init__(self) -> None:
            self.abandoned = False
            self._stopped = threading.Lock()  # held once the inner exporter is shut down

        def _stop_inner(self) -> None:
            # Once only: the stock exporters log a warning on a second shutdown.
            if self._stopped.acquire(blocking=False):
                inner.shutdown()

        def export(self, spans: Any) -> SpanExportResult:
            n = len(spans)
            if self.abandoned:
                with counters.lock:
                    counters.dropped += n
                return SpanExportResult.FAILURE
            try:
                result = inner.export(spans)
            except Exception:
                _log.exception("hangguard: exporting %d spans raised", n)
                result = SpanExportResult.FAILURE
            with counters.lock:
                if result is SpanExportResult.SUCCESS:
                    counters.exported += n
                else:
                    counters.failed += n
            return result

        def shutdown(self) -> None:
            if not self.abandoned:
                self._stop_inner()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return inner.force_flush(timeout_millis)

        def abandon(self) -> None:
            self.abandoned = True
            # Shutting the OTLP exporter down cancels its in-flight gRPC call and its
            # retry wait, so its thread stops instead of lingering to exit.
            try:
                self._stop_inner()
            except Exception:
                _log.exception("hangguard: stopping the span exporter raised")

    return _GuardedExporter()


#: The loggers the stock OTLP metric exporters report a failed export on.
_METRIC_EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)


def takes_no_metrics(record: logging.LogRecord) -> bool:
    """Whether ``record`` is an OTLP exporter saying the endpoint has no metrics service.

    That is gRPC ``UNIMPLEMENTED`` or HTTP 404 for a metrics export: what Jaeger, which
    takes traces only, answers. Any other failure is a real one and stays an ERROR.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    if not str(record.msg).startswith("Failed to export") or len(args) < 3:
        return False
    if "metric" not in str(args[0]):
        return False
    return "UNIMPLEMENTED" in str(args[2]) or args[1] == 404


def make_metric_guard(
    inner: MetricExporter,
    endpoint: str | None = None,
    *,
    preferred_temporality: dict[type, AggregationTemporality],
    preferred_aggregation: dict[type, Aggregation],
) -> MetricExporter:
    """Wrap the metric exporter so a shutdown that gave up can stop it, once.

    Once abandoned, batches are dropped instead of sent (the metrics are not counted; the
    shutdown's warning already says telemetry was not delivered), and the reader's own
    later ``shutdown`` does not stop the inner exporter a second time (the stock
    exporters warn when that happens).

    An endpoint that takes no metrics (Jaeger) is found at the first export: the
    exporter's ERROR about it is dropped, metric export is turned off for the rest of the
    run, and one INFO line says so and names ``OTEL_METRICS_EXPORTER=none``.
    """
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class _NoMetricsFilter(logging.Filter):
        # Acts only on records logged by this guard's own export, in its own thread.
        def filter(self, record: logging.LogRecord) -> bool:
            if getattr(guard.exporting, "now", False) and takes_no_metrics(record):
                guard.unsupported = True
                return False
            return True

    class _GuardedMetricExporter(MetricExporter):
        def __init__(self) -> None:
            # The same preferences the inner exporter was built with (passed in: the
            # exporter keeps them in private attributes).
            super().__init__(
                preferred_temporality=preferred_temporality,
                preferred_aggregation=preferred_aggregation,
            )
            self.inner = inner
            self.abandoned = False
            self.unsupported = False
            self.exporting = threading.local()
            self._stopped = threading.Lock()  # held once the inner exporter is shut down
            self._filter = _NoMetricsFilter()
            for name in _METRIC_EXPORTER_LOGGERS:
                # First in line: the exporter's logger drops a record whose level and
                # format match the one before it within 20 s, so any same-shaped export
                # ERROR just before (a span export, another exporter) would hide the
                # answer from a filter added after it.
                logging.getLogger(name).filters.insert(0, self._filter)

        def _stop_inner(self, timeout_millis: float) -> None:
            if self._stopped.acquire(blocking=False):
                for name in _METRIC_EXPORTER_LOGGERS:
                    logging.getLogger(name).removeFilter(self._filter)
                inner.shutdown(timeout_millis=timeout_millis)

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            if self.abandoned:
                return MetricExportResult.FAILURE
            if self.unsupported:
                return MetricExportResult.SUCCESS  # nothing to deliver: off by design
            self.exporting.now = True
            try:
                result = inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            finally:
                self.exporting.now = False
            if self.unsupported:
                _log.info(
                    "hangguard: %s takes no metrics (Jaeger takes traces only); metric "
                    "export to it is off for this run. Set OTEL_METRICS_EXPORTER=none to "
                    "skip the attempt.",
                    endpoint or "the OTLP endpoint",
                )
                return MetricExportResult.SUCCESS
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return inner.force_flush(timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._stop_inner(timeout_millis)

        def abandon(self) -> None:
            self.abandoned = True
            # Like the span exporter: cancels the in-flight call and the retry wait, so
            # the reader's thread can be joined.
            try:
                self._stop_inner(0)
            except Exception:
                _log.exception("hangguard: stopping the metric exporter raised")

    guard = _GuardedMetricExporter()
    return guard


def make_counting_processor(counters: Counters) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class _Counting(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ctx = span.context
            if ctx is not None and ctx.trace_flags.sampled:
                with counters.lock:
                    counters.ended += 1

    return _Counting()


#: The SDK's processor metric (OpenTelemetry semantic conventions, "SDK health").
METRIC_PROCESSOR_SPANS: Final = "otel.sdk.processor.span.processed"
_COMPONENT: Final = {
    "otel.component.type": "batching_span_processor",
    "otel.component.name": "hangguard_batching_span_processor",
}
# Export requests made while this is in the context are not traced themselves (HTTP
# client instrumentations check it), or each export would make spans to export. The SDK
# uses a private key object for it; the instrumentations also honour this plain key.
_SUPPRESS_KEY: Final = "suppress_instrumentation"


def make_batch_processor(
    exporter: SpanExporter,
    counters: Counters,
    *,
    max_queue_size: int,
    max_export_batch_size: int,
    schedule_delay: float,
) -> SpanProcessor:
    """A batching span processor whose drops are counted in ``counters``.

    Like the SDK's: ended spans wait in a queue of at most ``max_queue_size``; one thread
    exports them ``max_export_batch_size`` at a time, at once when a batch is full, else
    after ``schedule_delay`` seconds. A span that finds the queue full is dropped, counted,
    and the first drop logs one warning saying which setting to raise.
    ``force_flush`` returns once every span queued before the call was handed to the
    exporter; ``shutdown`` exports what is queued, then stops the exporter.
    """
    from opentelemetry import context
    from opentelemetry.sdk.trace import SpanProcessor

    class _BatchProcessor(SpanProcessor):
        def __init__(self) -> None:
            self._queue: deque[ReadableSpan] = deque()
            self._cond = threading.Condition(threading.Lock())
            # Sequence numbers: spans queued so far, spans handed to the exporter so far,
            # and how far a pending force_flush wants the second to reach.
            self._queued = self._handed = self._flush_to = 0
            self._idle = False  # the thread waits for a full batch or the delay
            self._stopping = False
            self._warned = False
            self._thread = self._start()
            if hasattr(os, "register_at_fork"):
                weak = weakref.WeakMethod(self._at_fork_reinit)

                def after_in_child() -> None:
                    reinit = weak()
                    if reinit is not None:
                        reinit()

                os.register_at_fork(after_in_child=after_in_child)

        def _start(self) -> threading.Thread:
            thread = threading.Thread(target=self._run, name="hangguard-span-batch", daemon=True)
            thread.start()
            return thread

        def _at_fork_reinit(self) -> None:
            # The child has a copy of the parent's spans (the parent exports them) and
            # no thread: start over.
            self._queue.clear()
            self._cond = threading.Condition(threading.Lock())
            self._queued = self._handed = self._flush_to = 0
            self._idle = False
            if not self._stopping:
                self._thread = self._start()

        def on_end(self, span: ReadableSpan) -> None:
            ctx = span.context
            if ctx is None or not ctx.trace_flags.sampled:
                return
            with self._cond:
                if self._stopping:
                    reason = "after_shutdown"
                elif len(self._queue) >= max_queue_size:
                    reason = "queue_full"
                else:
                    self._queue.append(span)
                    self._queued += 1
                    if self._idle and len(self._queue) >= max_export_batch_size:
                        self._idle = False
                        self._cond.notify_all()
                    return
            with counters.lock:
                counters.dropped += 1
                if reason == "queue_full":
                    counters.queue_full += 1
                else:
                    counters.after_shutdown += 1
            if reason == "queue_full" and not self._warned:
                self._warned = True
                _log.warning(
                    "hangguard: the span export queue is full (%d spans): dropping spans "
                    "until the exporter catches up; they are counted in stats().dropped. "
                    "Raise OTEL_BSP_MAX_QUEUE_SIZE (setup_tracing(max_queue_size=...)) "
                    "if the collector is healthy",
                    max_queue_size,
                )

        def _ready(self) -> bool:
            return (
                self._stopping
                or len(self._queue) >= max_export_batch_size
                or (self._flush_to > self._handed and bool(self._queue))
            )

        def _run(self) -> None:
            while True:
                with self._cond:
                    if not self._ready():
                        self._idle = True
                        self._cond.wait(schedule_delay)
                        self._idle = False
                    if self._stopping and not self._queue:
                        self._cond.notify_all()
                        return
                    n = min(max_export_batch_size, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                if not batch:
                    continue
                self._export(batch)
                with self._cond:
                    self._handed += n
                    self._cond.notify_all()

        def _export(self, batch: list[ReadableSpan]) -> None:
            token = context.attach(context.set_value(_SUPPRESS_KEY, True))
            try:
                exporter.export(batch)
            except Exception:
                _log.exception("hangguard: exporting %d spans raised", len(batch))
            finally:
                context.detach(token)
                with counters.lock:
                    counters.handed += len(batch)

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            deadline = time.monotonic() + timeout_millis / 1000
            with self._cond:
                target = self._queued
                self._flush_to = max(self._flush_to, target)
                self._cond.notify_all()
                while self._handed < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(left)
            return True

        def shutdown(self) -> None:
            with self._cond:
                if self._stopping:
                    return
                self._stopping = True
                self._cond.notify_all()
            # Bounded by the handle: once its shutdown gives up, the guard drops every
            # batch at once and stops the exporter, so the queue drains quickly.
            self._thread.join()
            exporter.shutdown()

    return _BatchProcessor()


def register_processor_metric(meter_provider: MeterProvider, counters: Counters) -> None:
    """Report ``counters`` as the ``otel.sdk.processor.span.processed`` counter.

    Spans handed to the exporter have no ``error.type``; dropped ones have ``queue_full``
    or ``already_shutdown`` (the semantic conventions' values). Read at each collection,
    so ending a span costs nothing more.
    """
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with counters.lock:
            handed, full, late = counters.handed, counters.queue_full, counters.after_shutdown
        yield Observation(handed, _COMPONENT)
        if full:
            yield Observation(full, {**_COMPONENT, "error.type": "queue_full"})
        if late:
            yield Observation(late, {**_COMPONENT, "error.type": "already_shutdown"})

    meter = meter_provider.get_meter(TRACER_NAME)
    meter.create_observable_counter(
        METRIC_PROCESSOR_SPANS,
        callbacks=[observe],
        unit="{span}",
        description="Spans the batching processor handed to the exporter, or dropped.",
    )
