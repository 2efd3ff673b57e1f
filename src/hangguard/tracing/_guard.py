"""The machinery behind the bounded shutdown: a worker thread, a guarded exporter, counters.

Every blocking SDK call (flush, shutdown) runs on :class:`Worker`, one daemon thread
started at setup, so the caller can stop waiting at its timeout. :func:`make_guard` wraps
the span exporter: it counts what happens to each batch and, once the shutdown gave up,
drops instead of waiting (and stops the inner exporter so its retries end);
:func:`make_metric_guard` does the same for the metric exporter. The counts,
with the ended spans :func:`make_counting_processor` counts, are :class:`ExportStats`.
The SDK is imported only when a guard or processor is built.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "Counters",
    "ExportStats",
    "Job",
    "Worker",
    "make_counting_processor",
    "make_guard",
    "make_metric_guard",
]

_log = logging.getLogger("hangguard")


@dataclass(frozen=True, slots=True)
class ExportStats:
    """Span counts since setup: ended (and sampled), exported, failed to export, dropped.

    ``pending`` is what is still queued; after a shutdown that timed out it is what the
    process exit loses.
    """

    ended: int
    exported: int
    failed: int
    dropped: int

    @property
    def pending(self) -> int:
        return max(0, self.ended - self.exported - self.failed - self.dropped)


class Counters:
    __slots__ = ("dropped", "ended", "exported", "failed", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = self.exported = self.failed = self.dropped = 0

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


def make_metric_guard(inner: MetricExporter) -> MetricExporter:
    """Wrap the metric exporter so a shutdown that gave up can stop it, once.

    Once abandoned, batches are dropped instead of sent (the metrics are not counted; the
    shutdown's warning already says telemetry was not delivered), and the reader's own
    later ``shutdown`` does not stop the inner exporter a second time (the stock
    exporters warn when that happens).
    """
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class _GuardedMetricExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=inner._preferred_temporality,
                preferred_aggregation=inner._preferred_aggregation,
            )
            self.inner = inner
            self.abandoned = False
            self._stopped = threading.Lock()  # held once the inner exporter is shut down

        def _stop_inner(self, timeout_millis: float) -> None:
            if self._stopped.acquire(blocking=False):
                inner.shutdown(timeout_millis=timeout_millis)

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            if self.abandoned:
                return MetricExportResult.FAILURE
            return inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

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

    return _GuardedMetricExporter()


def make_counting_processor(counters: Counters) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class _Counting(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ctx = span.context
            if ctx is not None and ctx.trace_flags.sampled:
                with counters.lock:
                    counters.ended += 1

    return _Counting()
