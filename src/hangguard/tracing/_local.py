"""The embedded default exporter: finished spans kept in memory and, optionally, in a file.

:func:`hangguard.setup_tracing` installs it when no OTLP endpoint is configured, so a
program traced without a collector still has its spans: in memory (the newest
``max_spans``, for :meth:`TracingHandle.local_spans` and :func:`hangguard.tracing.local_spans`)
and, when ``HANGGUARD_TRACE_FILE`` or ``trace_file=`` names a file, appended to it as
JSON lines for ``hangguard`` the CLI to render as a tree. Needs the SDK; imported only by
``setup_tracing``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from ._records import SpanEventRecord, SpanRecord

__all__ = ["DEFAULT_MAX_SPANS", "LocalSpanExporter", "to_record"]

_log = logging.getLogger("hangguard")

#: How many finished spans the in-memory buffer keeps (the oldest go first).
DEFAULT_MAX_SPANS = 10_000


def to_record(span: ReadableSpan) -> SpanRecord:
    """Convert an SDK span into a :class:`SpanRecord`."""
    ctx = span.context
    parent = span.parent
    status = span.status
    scope = span.instrumentation_scope
    return SpanRecord(
        trace_id=format_trace_id(ctx.trace_id) if ctx is not None else "",
        span_id=format_span_id(ctx.span_id) if ctx is not None else "",
        parent_span_id=format_span_id(parent.span_id) if parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status=status.status_code.name,
        status_description=status.description,
        attributes=dict(span.attributes or {}),  # type: ignore[arg-type]
        events=tuple(
            SpanEventRecord(
                name=e.name,
                timestamp_ns=e.timestamp,
                attributes=dict(e.attributes or {}),  # type: ignore[arg-type]
            )
            for e in span.events
        ),
        resource=dict(span.resource.attributes),  # type: ignore[arg-type]
        scope=scope.name if scope is not None else "",
    )


class LocalSpanExporter(SpanExporter):
    """Keep finished spans in a bounded buffer and optionally append them to a JSON-lines file.

    Export never raises and never blocks on the network. When the buffer is full the
    oldest spans make room (counted in :attr:`evicted`); a file that cannot be written
    is reported once, with its traceback, and then only the buffer is kept::

        exporter = LocalSpanExporter(trace_file="trace.jsonl")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    """

    def __init__(
        self,
        *,
        max_spans: int = DEFAULT_MAX_SPANS,
        trace_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(max_spans, bool) or not isinstance(max_spans, int) or max_spans < 1:
            raise ValueError(f"max_spans must be a whole number >= 1, got {max_spans!r}")
        self._spans: deque[SpanRecord] = deque(maxlen=max_spans)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self.trace_file = os.fspath(trace_file) if trace_file is not None else None
        self.evicted = 0
        self._closed = False
        if self.trace_file is not None:
            # Opened here, not at first export, so a bad path fails the setup call that gave it.
            self._file = open(self.trace_file, "a", encoding="utf-8")  # noqa: SIM115

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Record ``spans``; fails only after shutdown."""
        if self._closed:
            return SpanExportResult.FAILURE
        records = [to_record(s) for s in spans]
        with self._lock:
            overflow = len(self._spans) + len(records) - (self._spans.maxlen or 0)
            if overflow > 0:
                self.evicted += min(overflow, len(self._spans) + len(records))
            self._spans.extend(records)
            if self._file is not None:
                self._write(records)
        return SpanExportResult.SUCCESS

    def _write(self, records: list[SpanRecord]) -> None:
        assert self._file is not None
        try:
            self._file.write("".join(json.dumps(r.to_json()) + "\n" for r in records))
            self._file.flush()
        except (OSError, TypeError, ValueError):
            _log.exception(
                "hangguard: cannot write spans to %s; keeping them in memory only", self.trace_file
            )
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                _log.exception("hangguard: closing %s failed", self.trace_file)
            self._file = None

    def spans(self) -> list[SpanRecord]:
        """The buffered spans, oldest first."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget the buffered spans (the file is left as it is)."""
        with self._lock:
            self._spans.clear()

    def shutdown(self) -> None:
        """Close the file; the buffer stays readable."""
        with self._lock:
            self._closed = True
            self._close_file()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is held back: every export is written at once."""
        return True
