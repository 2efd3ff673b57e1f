"""hangguard: concurrent work that never hangs, with every timeout, failure, retry and
cancellation visible in an OpenTelemetry trace.

Importing hangguard has no side effects: it reads no environment variable, installs no
tracer provider and starts nothing. Applications opt in to exporting with
:func:`setup_tracing` (from :mod:`hangguard.tracing`). The optional parts live in their
own subpackages: :mod:`hangguard.mcp` (the ``mcp`` extra), :mod:`hangguard.ray` (the
``ray`` extra), :mod:`hangguard.tracing` (the application-side SDK setup, ``otlp`` extra)
and :mod:`hangguard.testing`.
"""

from ._config import Config, load_config
from ._deadline import Deadline, DeadlineScope, current_deadline, deadline, remaining, split_budget
from ._exceptions import (
    ConfigError,
    DeadlineExceeded,
    HangguardError,
    JoinTimeout,
    McpCallError,
    McpCircuitOpen,
    McpConnectError,
    McpError,
    McpToolError,
    McpUnknownToolError,
    ThreadCancelled,
)
from ._group import TaskGroup
from ._op import GuardedOpMixin, guarded_op
from ._op_scope import traced
from ._providers import use_providers
from ._retry import Backoff, RetryOn, RetryPolicy, retry, retry_call
from ._retry_budget import RetryBudget, retry_budget
from ._threads import ThreadGroup, checkpoint, to_thread
from ._version import __version__
from ._watchdog import LoopWatchdog, watch_loop
from .tracing import setup_tracing

__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineScope",
    "GuardedOpMixin",
    "HangguardError",
    "JoinTimeout",
    "LoopWatchdog",
    "McpCallError",
    "McpCircuitOpen",
    "McpConnectError",
    "McpError",
    "McpToolError",
    "McpUnknownToolError",
    "RetryBudget",
    "RetryOn",
    "RetryPolicy",
    "TaskGroup",
    "ThreadCancelled",
    "ThreadGroup",
    "__version__",
    "checkpoint",
    "current_deadline",
    "deadline",
    "guarded_op",
    "load_config",
    "remaining",
    "retry",
    "retry_budget",
    "retry_call",
    "setup_tracing",
    "split_budget",
    "to_thread",
    "traced",
    "use_providers",
    "watch_loop",
]

# Tracebacks and docs name the public path (as httpx does), not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("hangguard._"):
        _obj.__module__ = __name__
del _name, _obj
