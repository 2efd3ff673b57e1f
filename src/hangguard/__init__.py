"""hangguard: concurrent async work that never hangs, with every timeout, failure,
retry and cancellation visible in an OpenTelemetry trace.

Importing hangguard has no side effects: it reads no environment variable, installs no
tracer provider and starts nothing. Applications opt in to exporting with
:func:`setup_tracing`.
"""

from ._config import Config, load_config
from ._deadline import Deadline, DeadlineScope, current_deadline, deadline, remaining, split_budget
from ._exceptions import (
    ConfigError,
    DeadlineExceeded,
    HangguardError,
    JoinTimeout,
    McpCallError,
    McpConnectError,
    McpError,
    McpToolError,
)
from ._group import TaskGroup
from ._op import GuardedOpMixin, guarded_op
from ._retry import Backoff, RetryOn, RetryPolicy, retry, retry_call
from ._retry_budget import RetryBudget, retry_budget
from ._setup import (
    ExportStats,
    TracingHandle,
    TracingSettings,
    local_spans,
    resolve_settings,
    setup_tracing,
)
from ._span_record import SpanEventRecord, SpanRecord, read_span_file
from ._traced import traced
from ._version import __version__

__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineScope",
    "ExportStats",
    "GuardedOpMixin",
    "HangguardError",
    "JoinTimeout",
    "McpCallError",
    "McpConnectError",
    "McpError",
    "McpToolError",
    "RetryBudget",
    "RetryOn",
    "RetryPolicy",
    "SpanEventRecord",
    "SpanRecord",
    "TaskGroup",
    "TracingHandle",
    "TracingSettings",
    "__version__",
    "current_deadline",
    "deadline",
    "guarded_op",
    "load_config",
    "local_spans",
    "read_span_file",
    "remaining",
    "resolve_settings",
    "retry",
    "retry_budget",
    "retry_call",
    "setup_tracing",
    "split_budget",
    "traced",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("hangguard._"):
        _obj.__module__ = "hangguard"
del _name, _obj
