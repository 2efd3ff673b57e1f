"""Application-side OpenTelemetry setup: :func:`setup_tracing` and its bounded shutdown.

The library itself never calls this: it only uses the API and records into whatever
provider the application installed. An application that wants hangguard's traces calls
``setup_tracing()`` once at start-up. It installs an SDK ``TracerProvider`` and
``MeterProvider`` exporting over OTLP as the standard ``OTEL_*`` variables say (arguments
override them), or, with no endpoint configured, the local exporter of
:mod:`hangguard._local_export`.

Why the shutdown is ours: the stock SDK blocks for as long as its exporter retries. Measured
here with SDK 1.45 and ten spans, against a closed port and a socket that accepts and never
answers, ``force_flush(2000)`` took 6-10 s (it ignores its timeout), ``shutdown()`` 7-10 s,
and the process exit (the SDK's own ``atexit`` hook) as long. Here every blocking SDK call
runs on one daemon thread started at setup (so nothing needs a new thread at interpreter
exit) and the caller waits at most ``shutdown_timeout``; the SDK's own exit hooks are off
and ours is bounded. What could not be delivered in time is dropped and counted in one
warning; docs/jaeger.md says what is dropped when.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from opentelemetry import metrics, trace

from ._config import (
    ENV_TRACE_FILE,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from ._deadline import check_timeout
from ._exceptions import ConfigError
from ._span_record import SpanRecord
from ._telemetry import _is_noop as _is_noop_tracer_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import Sampler

    from ._local_export import LocalSpanExporter

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "ExportStats",
    "TracingHandle",
    "TracingSettings",
    "local_spans",
    "resolve_settings",
    "setup_tracing",
]

_log = logging.getLogger("hangguard")

#: What the process exit keeps of ``shutdown_timeout`` for the interpreter's own teardown.
_EXIT_ALLOWANCE: Final = 0.15


#: How long ``shutdown()`` and the process exit may wait for telemetry, by default.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 2.0

_PROTOCOLS: Final = ("grpc", "http/protobuf")
_SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _check_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name}={url!r} is not an OTLP endpoint URL: use http://host:port "
            "(or https://) as in http://localhost:4317",
            name=name,
            value=url,
        )
    return url


def _signal_url(base: str, signal: str, protocol: str) -> str:
    # Per the OTLP exporter spec, a base endpoint gets the signal's path appended for
    # HTTP; gRPC takes the address as it is.
    if protocol == "grpc":
        return base
    return base.rstrip("/") + f"/v1/{signal}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingSettings:
    """What :func:`setup_tracing` resolved from its arguments and the ``OTEL_*`` variables.

    ``exporter`` is ``"otlp"`` or ``"local"``; the endpoints are full URLs as the exporters
    use them (``None`` where that signal is not sent over OTLP)::

        hangguard.resolve_settings().traces_endpoint  # what setup_tracing() would use
    """

    exporter: str
    protocol: str
    traces_endpoint: str | None
    metrics_endpoint: str | None
    metrics_protocol: str
    sampler: str
    sampler_arg: float | None
    shutdown_timeout: float
    trace_file: str | None


def _resolve_protocol(arg: str | None, signal_var: str) -> str:
    if arg is not None:
        name, value = "protocol", arg
    else:
        name = signal_var if _env(signal_var) else OTEL_EXPORTER_OTLP_PROTOCOL
        value = _env(name) or "grpc"
    if value not in _PROTOCOLS:
        raise ConfigError(
            f"{name}={value!r} is not supported: use 'grpc' or 'http/protobuf'",
            name=name,
            value=value,
        )
    return value


def _resolve_endpoint(arg: str | None, signal: str, signal_var: str, protocol: str) -> str | None:
    if arg is not None:
        return _signal_url(_check_url(arg, "endpoint"), signal, protocol)
    exact = _env(signal_var)
    if exact is not None:
        return _check_url(exact, signal_var)
    base = _env(OTEL_EXPORTER_OTLP_ENDPOINT)
    if base is not None:
        return _signal_url(_check_url(base, OTEL_EXPORTER_OTLP_ENDPOINT), signal, protocol)
    return None


def _resolve_sampler(sampler: str | None, sampler_arg: float | None) -> tuple[str, float | None]:
    name_src = "sampler" if sampler is not None else OTEL_TRACES_SAMPLER
    name = (sampler if sampler is not None else _env(OTEL_TRACES_SAMPLER)) or (
        "parentbased_always_on"
    )
    name = name.strip().lower()
    if name not in _SAMPLERS:
        raise ConfigError(
            f"{name_src}={name!r} is not a sampler hangguard can build: use one of "
            + ", ".join(_SAMPLERS)
            + " (or pass a Sampler object)",
            name=name_src,
            value=name,
        )
    if not name.endswith("traceidratio"):
        return name, None
    if sampler_arg is not None:
        arg_src, raw = "sampler_arg", repr(sampler_arg)
        ratio = float(sampler_arg)
    else:
        arg_src = OTEL_TRACES_SAMPLER_ARG
        raw = _env(OTEL_TRACES_SAMPLER_ARG) or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            ratio = math.nan
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(
            f"{arg_src}={raw} must be a ratio between 0 and 1 for sampler {name}",
            name=arg_src,
            value=raw,
        )
    return name, ratio


def _check_resource_attributes() -> None:
    # The SDK skips a malformed entry with a log line; a typo here would silently lose
    # e.g. deployment.environment, so it is an error instead.
    raw = _env(OTEL_RESOURCE_ATTRIBUTES)
    if raw is None:
        return
    for item in raw.split(","):
        if item.strip() and "=" not in item:
            raise ConfigError(
                f"{OTEL_RESOURCE_ATTRIBUTES}={raw!r}: entry {item.strip()!r} is not key=value",
                name=OTEL_RESOURCE_ATTRIBUTES,
                value=raw,
            )


def resolve_settings(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    trace_file: str | os.PathLike[str] | None = None,
) -> TracingSettings:
    """Resolve :func:`setup_tracing`'s exporter choice without installing anything.

    Arguments beat the environment; bad values raise :class:`ConfigError` naming the
    argument or variable::

        settings = hangguard.resolve_settings()
        print(settings.exporter, settings.traces_endpoint)
    """
    timeout = check_timeout(shutdown_timeout, "shutdown_timeout")
    if math.isinf(timeout):
        raise ValueError("shutdown_timeout must be finite: it bounds the process exit")
    if sampler_arg is not None and (
        isinstance(sampler_arg, bool) or not isinstance(sampler_arg, (int, float))
    ):
        raise TypeError(f"sampler_arg must be a number, got {sampler_arg!r}")
    traces_protocol = _resolve_protocol(protocol, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
    metrics_protocol = _resolve_protocol(protocol, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
    traces_endpoint = _resolve_endpoint(
        endpoint, "traces", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, traces_protocol
    )
    metrics_endpoint = _resolve_endpoint(
        endpoint, "metrics", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, metrics_protocol
    )
    sampler_name, ratio = _resolve_sampler(sampler, sampler_arg)
    _check_resource_attributes()
    file = os.fspath(trace_file) if trace_file is not None else _env(ENV_TRACE_FILE)
    return TracingSettings(
        exporter="otlp" if traces_endpoint is not None else "local",
        protocol=traces_protocol,
        traces_endpoint=traces_endpoint,
        metrics_endpoint=metrics_endpoint,
        metrics_protocol=metrics_protocol,
        sampler=sampler_name,
        sampler_arg=ratio,
        shutdown_timeout=timeout,
        trace_file=file,
    )


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


class _Counters:
    __slots__ = ("dropped", "ended", "exported", "failed", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = self.exported = self.failed = self.dropped = 0

    def snapshot(self) -> ExportStats:
        with self.lock:
            return ExportStats(self.ended, self.exported, self.failed, self.dropped)


class _Worker:
    """One daemon thread that runs blocking SDK calls, so callers can stop waiting.

    Started at setup: at interpreter exit (Python 3.12+) no new thread may start, and the
    exit hook still needs somewhere to run the flush it will not wait for.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], bool], threading.Event, list[bool]]]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hangguard-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            fn, done, box = self._jobs.get()
            try:
                box.append(fn())
            except Exception:
                _log.exception("hangguard: telemetry flush/shutdown failed")
                box.append(False)
            finally:
                done.set()
            if fn is _stop_marker:
                return

    def run(self, fn: Callable[[], bool], timeout: float) -> bool:
        """Run ``fn`` on the thread; ``False`` when it fails or is still running at ``timeout``."""
        done = threading.Event()
        box: list[bool] = []
        self._jobs.put((fn, done, box))
        return done.wait(timeout) and bool(box and box[0])

    def stop(self) -> None:
        self._jobs.put((_stop_marker, threading.Event(), []))


def _stop_marker() -> bool:
    return True


def _make_guard(inner: SpanExporter, counters: _Counters) -> SpanExporter:
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


def _make_counting_processor(counters: _Counters) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class _Counting(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ctx = span.context
            if ctx is not None and ctx.trace_flags.sampled:
                with counters.lock:
                    counters.ended += 1

    return _Counting()


def _build_sampler(name: str, ratio: float | None) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    root: Sampler
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(1.0 if ratio is None else ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _span_exporter(
    settings: TracingSettings, headers: Mapping[str, str] | None, timeout: float | None
) -> SpanExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=settings.traces_endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=settings.traces_endpoint, headers=headers, timeout=timeout)


def _metric_exporter(
    settings: TracingSettings, headers: Mapping[str, str] | None, timeout: float | None
) -> MetricExporter:
    if settings.metrics_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=settings.metrics_endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=settings.metrics_endpoint, headers=headers, timeout=timeout)


_active_handle: TracingHandle | None = None


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
        metric_exporter: MetricExporter | None,
        counters: _Counters,
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
        self._metric_exporter = metric_exporter
        self._counters = counters
        self._worker = _Worker()
        self._lock = threading.Lock()
        self._closed = False
        self._shutdown_ok = False
        atexit.register(self._at_exit)

    @property
    def shutdown_timeout(self) -> float:
        """The most ``shutdown()`` and the process exit wait for telemetry, in seconds."""
        return self.settings.shutdown_timeout

    def stats(self) -> ExportStats:
        """How many spans ended, were exported, failed or were dropped so far."""
        return self._counters.snapshot()

    def _flush_all(self) -> bool:
        failed_before = self._counters.snapshot().failed
        ok = self.provider.force_flush()
        # Given up on meanwhile: the exporters are stopped, do not wake them again.
        if self.meter_provider is not None and not self._guard.abandoned:
            ok = self.meter_provider.force_flush() and ok
        # The stock processor reports success even when its exports failed.
        return ok and self._counters.snapshot().failed == failed_before

    def _shutdown_all(self) -> bool:
        ok = self._flush_all()
        if self._guard.abandoned:
            return False
        self.provider.shutdown()
        if self.meter_provider is not None and not self._guard.abandoned:
            self.meter_provider.shutdown()
        return ok

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export everything queued now; ``True`` when it all went out within ``timeout``.

        ``timeout`` defaults to ``shutdown_timeout``. A ``False`` leaves the rest queued
        (the flush keeps going in the background)::

            if not tracing.force_flush(5):
                log.warning("collector is slow or down")
        """
        seconds = check_timeout(timeout, "timeout", none_means=self.shutdown_timeout)
        if self._closed:
            return False
        return self._worker.run(self._flush_all, seconds)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop, waiting at most ``timeout`` (``shutdown_timeout`` by default).

        Returns ``True`` when every span went out. Otherwise the rest is dropped, one
        warning says how many, and the exporters are stopped so nothing lingers to the
        process exit. Calling it again does nothing and returns the first result.
        """
        seconds = check_timeout(timeout, "timeout", none_means=self.shutdown_timeout)
        with self._lock:
            if self._closed:
                return self._shutdown_ok
            self._closed = True
        atexit.unregister(self._at_exit)
        start = time.monotonic()
        ok = self._worker.run(self._shutdown_all, seconds)
        if not ok:
            self._abandon(time.monotonic() - start)
        self._worker.stop()
        self._shutdown_ok = ok
        return ok

    def _abandon(self, waited: float) -> None:
        self._guard.abandon()
        # The stock exporters mark themselves shut down (and warn when it happens twice).
        if self._metric_exporter is not None and not getattr(
            self._metric_exporter, "_shutdown", False
        ):
            try:
                self._metric_exporter.shutdown(timeout_millis=0)
            except Exception:
                _log.exception("hangguard: stopping the metric exporter raised")
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


def local_spans() -> list[SpanRecord]:
    """Spans held by the local exporter of the last :func:`setup_tracing`; ``[]`` if none.

    A CLI or a test reads what a traced run produced::

        hangguard.setup_tracing()
        asyncio.run(main())
        print(len(hangguard.local_spans()))
    """
    handle = _active_handle
    if handle is None or handle._local is None:
        return []
    return handle.local_spans()


def _check_globals_free(*, meter: bool) -> None:
    taken = []
    if not _is_noop_tracer_provider(trace.get_tracer_provider()):
        taken.append("TracerProvider")
    from opentelemetry.metrics import _internal

    if meter and getattr(_internal, "_METER_PROVIDER", None) is not None:
        taken.append("MeterProvider")
    if taken:
        raise RuntimeError(
            f"a global {' and '.join(taken)} is already installed, and OpenTelemetry allows "
            "only one: call setup_tracing() once, before anything else sets one, or pass "
            "set_global=False and use handle.provider yourself"
        )


def setup_tracing(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    sampler: Sampler | str | None = None,
    sampler_arg: float | None = None,
    metrics_enabled: bool = True,
    metric_export_interval: float = 60.0,
    export_timeout: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    trace_file: str | os.PathLike[str] | None = None,
    max_local_spans: int = 10_000,
    set_global: bool = True,
) -> TracingHandle:
    """Install an OpenTelemetry SDK tracer and meter provider exporting hangguard's telemetry.

    For applications (the library never calls it). Configuration follows the standard
    variables, and each argument overrides its variable:

    ================  =====================================================================
    ``service_name``  ``OTEL_SERVICE_NAME`` (else ``service.name`` in
                      ``OTEL_RESOURCE_ATTRIBUTES``)
    ``endpoint``      ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL; the per-signal
                      ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``_METRICS_ENDPOINT`` are
                      used as they are)
    ``protocol``      ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL``: ``grpc`` (default,
                      port 4317) or ``http/protobuf`` (port 4318)
    ``sampler``       ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, or a Sampler
    ``trace_file``    ``HANGGUARD_TRACE_FILE``: with no endpoint, also append spans there
    ================  =====================================================================

    With no endpoint at all, spans stay in-process (see :func:`local_spans`) instead of
    failing. ``shutdown_timeout`` bounds :meth:`TracingHandle.shutdown` and the process
    exit whatever the collector does. Raises :class:`ConfigError` naming the argument or
    variable that is wrong, and ``RuntimeError`` if a global provider is already set::

        tracing = hangguard.setup_tracing(service_name="research-agent")
        asyncio.run(main())   # at exit: flushed within 2 s, or the rest dropped
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            InMemoryMetricReader,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import Sampler as SamplerBase
    except ImportError as exc:
        raise ImportError(
            "setup_tracing needs the OpenTelemetry SDK and OTLP exporters: "
            "pip install 'hangguard[otlp]'"
        ) from exc

    global _active_handle
    if sampler is not None and not isinstance(sampler, (str, SamplerBase)):
        raise TypeError(f"sampler must be a sampler name or a Sampler, got {sampler!r}")
    settings = resolve_settings(
        endpoint=endpoint,
        protocol=protocol,
        sampler=sampler if isinstance(sampler, str) else None,
        sampler_arg=sampler_arg,
        shutdown_timeout=shutdown_timeout,
        trace_file=trace_file,
    )
    if isinstance(sampler, SamplerBase):
        settings_sampler: Sampler = sampler
        settings = replace(settings, sampler=sampler.get_description(), sampler_arg=None)
    else:
        settings_sampler = _build_sampler(settings.sampler, settings.sampler_arg)
    per_export = None
    if export_timeout is not None:
        per_export = check_timeout(export_timeout, "export_timeout")
        if per_export == 0 or math.isinf(per_export):
            raise ValueError(f"export_timeout must be > 0 and finite, got {export_timeout!r}")
    interval = check_timeout(metric_export_interval, "metric_export_interval")
    if interval == 0 or math.isinf(interval):
        raise ValueError("metric_export_interval must be > 0 and finite")
    if isinstance(max_local_spans, bool) or not isinstance(max_local_spans, int):
        raise TypeError(f"max_local_spans must be a whole number, got {max_local_spans!r}")
    if max_local_spans < 1:
        raise ValueError(f"max_local_spans must be >= 1, got {max_local_spans!r}")
    if set_global:
        _check_globals_free(meter=metrics_enabled)

    attrs: dict[str, Any] = dict(resource_attributes or {})
    if service_name is not None:
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")
        attrs["service.name"] = service_name
    resource = Resource.create(attrs)

    counters = _Counters()
    provider = TracerProvider(resource=resource, sampler=settings_sampler, shutdown_on_exit=False)
    provider.add_span_processor(_make_counting_processor(counters))
    local: LocalSpanExporter | None = None
    span_exporter: SpanExporter
    if settings.exporter == "otlp":
        span_exporter = _span_exporter(settings, headers, per_export)
        guard = _make_guard(span_exporter, counters)
        provider.add_span_processor(BatchSpanProcessor(guard))
    else:
        from ._local_export import LocalSpanExporter

        try:
            local = LocalSpanExporter(max_spans=max_local_spans, trace_file=settings.trace_file)
        except OSError as exc:
            source = "trace_file" if trace_file is not None else ENV_TRACE_FILE
            raise ConfigError(
                f"{source}={settings.trace_file!r} cannot be opened for appending spans: {exc}",
                name=source,
                value=settings.trace_file,
            ) from exc
        span_exporter = local
        guard = _make_guard(local, counters)
        # In memory only, export is a conversion and an append; with a file it is disk
        # I/O, which belongs on the batch thread rather than on the event loop.
        processor = BatchSpanProcessor(guard) if local.trace_file else SimpleSpanProcessor(guard)
        provider.add_span_processor(processor)

    meter_provider: MeterProvider | None = None
    memory_reader: InMemoryMetricReader | None = None
    metric_exporter: MetricExporter | None = None
    if metrics_enabled:
        reader: MetricReader
        if settings.metrics_endpoint is not None:
            metric_exporter = _metric_exporter(settings, headers, per_export)
            reader = PeriodicExportingMetricReader(
                metric_exporter, export_interval_millis=interval * 1000
            )
        else:
            reader = memory_reader = InMemoryMetricReader()
        meter_provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )

    handle = TracingHandle(
        settings=settings,
        provider=provider,
        meter_provider=meter_provider,
        metric_reader=memory_reader,
        local_exporter=local,
        span_exporter=span_exporter,
        guard=guard,
        metric_exporter=metric_exporter,
        counters=counters,
        is_global=set_global,
    )
    if set_global:
        trace.set_tracer_provider(provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
        _active_handle = handle
    return handle
