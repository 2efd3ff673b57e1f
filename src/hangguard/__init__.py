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
from ._op import GuardedOpMixin, guarded_op, traced
from ._retry import Backoff, RetryOn, RetryPolicy, retry, retry_call
from ._retry_budget import RetryBudget, retry_budget
from ._version import __version__

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
    "McpCallError",
    "McpConnectError",
    "McpError",
    "McpToolError",
    "RetryBudget",
    "RetryOn",
    "RetryPolicy",
    "TaskGroup",
    "__version__",
    "current_deadline",
    "deadline",
    "guarded_op",
    "load_config",
    "remaining",
    "retry",
    "retry_budget",
    "retry_call",
    "split_budget",
    "traced",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("hangguard._"):
        _obj.__module__ = "hangguard"
del _name, _obj
