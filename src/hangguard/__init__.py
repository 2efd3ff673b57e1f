"""hangguard: concurrent async work that never hangs, with every timeout, failure,
retry and cancellation visible in an OpenTelemetry trace.

Importing hangguard has no side effects: it reads no environment variable, installs no
tracer provider and starts nothing. Applications opt in to exporting with
:func:`setup_tracing`.
"""

import importlib
from typing import TYPE_CHECKING

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
from ._export_guard import ExportStats
from ._group import TaskGroup
from ._op import GuardedOpMixin, guarded_op
from ._retry import Backoff, RetryOn, RetryPolicy, retry, retry_call
from ._retry_budget import RetryBudget, retry_budget
from ._setup import local_spans, setup_tracing
from ._span_record import SpanEventRecord, SpanRecord, read_span_file
from ._traced import traced
from ._tracing_handle import TracingHandle
from ._tracing_settings import TracingSettings, resolve_settings
from ._version import __version__

if TYPE_CHECKING:
    from ._mcp import McpClient
    from ._mcp_server import DeadlineMiddleware

# Names that need the mcp extra: imported on first use, so that `import hangguard`
# works without it.
_LAZY = {"McpClient": "._mcp", "DeadlineMiddleware": "._mcp_server"}


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hangguard' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        raise ImportError(
            f"hangguard.{name} needs the mcp extra: pip install 'hangguard[mcp]' ({exc})"
        ) from exc
    obj: object = getattr(module, name)
    obj.__module__ = "hangguard"
    globals()[name] = obj
    return obj


__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineMiddleware",
    "DeadlineScope",
    "ExportStats",
    "GuardedOpMixin",
    "HangguardError",
    "JoinTimeout",
    "McpCallError",
    "McpClient",
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
    _obj = globals().get(_name)  # the lazy names are absent until first used
    if getattr(_obj, "__module__", "").startswith("hangguard._"):
        _obj.__module__ = "hangguard"
del _name, _obj
