"""The application side of tracing: install the OpenTelemetry SDK, export, shut down in time.

The library itself only uses the OpenTelemetry API and never installs anything; an
application calls :func:`setup_tracing` once at start-up (it is re-exported as
``hangguard.setup_tracing``)::

    import hangguard

    with hangguard.setup_tracing(service_name="batch-job") as tracing:
        ...  # run the ops
    print(tracing.stats())

With no ``OTEL_EXPORTER_OTLP_ENDPOINT`` the spans stay in the process
(:func:`local_spans`) and, with ``HANGGUARD_TRACE_FILE``, go to a file that
:func:`read_span_file` (and ``hangguard trace FILE``) reads back. The SDK and exporters
(the ``otlp`` extra) are imported only when :func:`setup_tracing` runs.
"""

from ._bounded_export import ExportStats
from ._handle import TracingHandle
from ._records import SpanEventRecord, SpanRecord, read_span_file
from ._settings import TracingSettings, resolve_settings
from ._setup import local_spans, setup_tracing

__all__ = [
    "ExportStats",
    "SpanEventRecord",
    "SpanRecord",
    "TracingHandle",
    "TracingSettings",
    "local_spans",
    "read_span_file",
    "resolve_settings",
    "setup_tracing",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
