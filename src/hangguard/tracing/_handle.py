""":class:`TracingHandle`: what :func:`setup_tracing` installed, and its bounded shutdown.

Why the shutdown is ours: the stock SDK blocks for as long as its exporter retries. Measured
here with SDK 1.45 and ten spans, against a closed port and a socket that accepts and never
answers, ``force_flush(2000)`` took 6-10 s (it ignores its timeout), ``shutdown()`` 7-10 s,
and the process exit (the SDK's own ``atexit`` hook) as long. Here every blocking SDK call
runs on one daemon thread started at setup (so nothing needs a new thread at interpreter
exit) and the caller waits at most ``shutdown_timeout``; the SDK's own exit hooks are off
and ours is bounded. What could not be delivered in time is dropped and counted in one
warning; docs/jaeger.md says what is dropped when. The thread, the guarded exporter and the
counters are in :mod:`hangguard.tracing._bounded_export`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from .._deadline import check_timeout
from ._bounded_export import Counters, ExportStats, Job, Worker
from ._records import SpanRecord
from ._settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from ._local import LocalSpanExporter

__all__ = ["TracingHandle"]

_log = logging.getLogger("hangguard")

#: What the process exit keeps of ``shutdown_timeout`` for the interpreter's own teardown.
_EXIT_ALLOWANCE: Final = 0.15


class TracingHandle:
    """What :func:`setup_tracing` installed, and the way to shut it down in bounded time.

    ``shutdown()`` flushes and stops everything, waiting at most ``shutdown_timeout``;
    it also runs at process exit unless called before. Use it as a context manager to
    make the end explicit::

        with hangguard.setup_tracing(service_name="batch-job") as tracing:
            asyncio.run(main())
        # every span is exported here, or counted as dropped after 2 s
    """

    def __init__(
        self,
        *,
        settings: TracingSettings,
        provider: TracerProvider,
        meter_provider: MeterProvider | None,
        metric_reader: InMemoryMetricReader | None,
        local_exporter: LocalSpanExporter | None,
        span_exporter: SpanExporter,
        guard: Any,
        metric_guard: Any,
        counters: Counters,
        is_global: bool,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.meter_provider = meter_provider
        self.metric_reader = metric_reader
        self.is_global = is_global
        #: The exporter spans go to (OTLP gRPC/HTTP, or the local one).
        self.span_exporter = span_exporter
        self._local = local_exporter
        self._guard = guard
        self._metric_guard = metric_guard
        self._counters = counters
        self._worker = Worker()
        self._lock = threading.Lock()
        #: The flush running or queued on the worker, and how many were started: at most
        #: one is in flight, later calls wait for it instead of queueing more.
        self._flush: Job | None = None
        self._flushes = 0
        #: Spans failed or dropped as of the last flush (only the worker touches it).
        self._lost_reported = 0
        self._closed = False
        self._shutdown_ok = False
        self._shutdown_done = threading.Event()
        atexit.register(self._at_exit)

    @property
    def shutdown_timeout(self) -> float:
        """The most ``shutdown()`` and the process exit wait for telemetry, in seconds."""
        return self.settings.shutdown_timeout

    def stats(self) -> ExportStats:
        """How many spans ended, were exported, failed or were dropped so far.

        ``dropped`` counts the spans the export queue had no room for as well as those
        a shutdown that gave up left behind::

            if tracing.stats().dropped:
                log.warning("raise OTEL_BSP_MAX_QUEUE_SIZE")
        """
        return self._counters.snapshot()

    def _lost(self) -> int:
        s = self._counters.snapshot()
        return s.failed + s.dropped

    def _flush_all(self) -> bool:
        ok = self.provider.force_flush()
        # Given up on meanwhile: the exporters are stopped, do not wake them again.
        if self.meter_provider is not None and not self._guard.abandoned:
            ok = self.meter_provider.force_flush() and ok
        # A processor's flush succeeds once it handed everything over, whatever became
        # of it: a span that failed to export, or was dropped for want of room, since
        # the previous flush makes this one a failure.
        lost = self._lost()
        ok = ok and lost == self._lost_reported
        self._lost_reported = lost
        return ok

    def _shutdown_all(self) -> bool:
        ok = self._flush_all()
        # Also once given up on (the caller has returned by then): with the exporters
        # stopped and dropping, this is quick, and it ends the SDK's batch and metric
        # reader threads instead of leaving them to the process exit. (An OTLP/HTTP
        # request already on the wire cannot be cancelled: that one thread ends at its
        # export timeout, ~10 s by default, measured 9.5 s against a blackhole.)
        self.provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        # True only when every span ended since setup went out.
        s = self._counters.snapshot()
        return ok and not self._guard.abandoned and s.exported == s.ended

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export everything queued now; ``True`` when it all went out within ``timeout``.

        ``False`` too when a span failed to export or was dropped (a full queue) since the
        previous flush.

        ``timeout`` defaults to ``shutdown_timeout``. A ``False`` leaves the rest queued
        (the flush keeps going in the background; a later call waits for that one before
        starting another, so flushes do not pile up while the collector is down)::

            if not tracing.force_flush(5):
                log.warning("collector is slow or down")
        """
        seconds = check_timeout(timeout, "timeout", none_means=self.shutdown_timeout)
        deadline = time.monotonic() + seconds
        with self._lock:
            asked_after = self._flushes
        while True:
            with self._lock:
                if self._closed:
                    return False
                job = self._flush
                if job is None or job.done.is_set():
                    job = self._flush = self._worker.submit(self._flush_all)
                    self._flushes += 1
                mine = self._flushes > asked_after
            if not job.wait(max(0.0, deadline - time.monotonic())):
                return False
            if mine:
                return job.result
            # That flush started before this call, so it may have missed what was queued
            # since: run (or join) one that started after.

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop, waiting at most ``timeout`` (``shutdown_timeout`` by default).

        Returns ``True`` when every span ended since setup went out (``False`` if any
        failed to export or was dropped, even long before). Otherwise the rest is dropped, one
        warning says how many, and the exporters are stopped so nothing lingers to the
        process exit (the SDK's threads end in the background once the exporters are).
        Calling it again does nothing and returns the first result; a call made while the
        first is still running waits for it, at most its own ``timeout`` (``False`` then).
        """
        seconds = check_timeout(timeout, "timeout", none_means=self.shutdown_timeout)
        with self._lock:
            first = not self._closed
            self._closed = True
        if not first:
            waited = self._shutdown_done.wait(None if math.isinf(seconds) else seconds)
            return waited and self._shutdown_ok
        ok = False
        try:
            atexit.unregister(self._at_exit)
            start = time.monotonic()
            ok = self._worker.run(self._shutdown_all, seconds)
            if not ok:
                self._abandon(time.monotonic() - start)
        finally:
            self._worker.stop()
            self._shutdown_ok = ok
            self._shutdown_done.set()
        return ok

    def _abandon(self, waited: float) -> None:
        self._guard.abandon()
        if self._metric_guard is not None:
            self._metric_guard.abandon()
        s = self.stats()
        lost = s.ended - s.exported
        target = self.settings.traces_endpoint or "the local exporter"
        _log.warning(
            "hangguard: telemetry did not flush to %s within %.1fs; %d of %d spans not "
            "delivered (%d failed to export, %d dropped or still queued)",
            target,
            waited,
            lost,
            s.ended,
            s.failed,
            lost - s.failed,
        )

    def _at_exit(self) -> None:
        # The interpreter still tears itself down after the atexit hooks (tens of ms,
        # measured ~60 ms here): leave it that much, so the whole exit fits the bound.
        self.shutdown(max(0.0, self.settings.shutdown_timeout - _EXIT_ALLOWANCE))

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """:meth:`shutdown` without blocking the event loop."""
        return await asyncio.to_thread(self.shutdown, timeout)

    def local_spans(self) -> list[SpanRecord]:
        """The spans the local exporter holds (flushed first, within ``shutdown_timeout``).

        Raises ``RuntimeError`` when spans go to an OTLP endpoint instead::

            tracing = hangguard.setup_tracing()  # no OTEL_EXPORTER_OTLP_ENDPOINT set
            ...
            for span in tracing.local_spans():
                print(span.name, span.status)
        """
        if self._local is None:
            raise RuntimeError(
                f"spans go to {self.settings.traces_endpoint}, not to the local exporter; "
                "unset the OTLP endpoint to keep them locally"
            )
        if not self._closed:
            self.force_flush()
        return self._local.spans()

    def __enter__(self) -> TracingHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> TracingHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()

    def __repr__(self) -> str:
        s = self.settings
        where = s.traces_endpoint if s.exporter == "otlp" else "local"
        return f"<TracingHandle {where} shutdown_timeout={s.shutdown_timeout:g}s>"
