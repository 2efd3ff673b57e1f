"""The public surface: pinned names, and an import with no side effects."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pathlib
import pkgutil
import subprocess
import sys
import textwrap
import typing
from types import FunctionType, ModuleType

import pytest

import hangguard

#: Every public module and its pinned ``__all__``. A new public module is added here.
SURFACE: dict[str, list[str]] = {
    "hangguard": [
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
    ],
    "hangguard.mcp": [
        "TIMEOUT_META_KEY",
        "DeadlineMiddleware",
        "McpCallError",
        "McpCircuitOpen",
        "McpClient",
        "McpConnectError",
        "McpError",
        "McpToolError",
        "McpUnknownToolError",
    ],
    "hangguard.http": [
        "ENVOY_TIMEOUT_HEADER",
        "IDEMPOTENT_METHODS",
        "TIMEOUT_HEADER",
        "AsgiDeadlineMiddleware",
        "AsyncDeadlineTransport",
        "DeadlineTransport",
    ],
    "hangguard.ray": [
        "NodeLost",
        "ObjectLost",
        "RemoteGroup",
        "RemoteTaskError",
        "TaskCancelled",
        "TaskOptions",
        "WorkerLost",
        "worker_env",
    ],
    "hangguard.tracing": [
        "ExportStats",
        "SpanEventRecord",
        "SpanRecord",
        "TracingHandle",
        "TracingSettings",
        "local_spans",
        "read_span_file",
        "resolve_settings",
        "setup_tracing",
    ],
    "hangguard.testing": ["BaseAsyncOp", "FakeClock", "OpContext", "disable_backoff", "use_clock"],
    "hangguard.testing.chaos": [
        "Blackhole",
        "ChaosEvent",
        "ChaosRecorder",
        "ChaosServer",
        "FaultKind",
        "HttpFault",
        "build_chaos_server",
        "closed_port_url",
        "main",
        "stdio_command",
    ],
}

PUBLIC = SURFACE["hangguard"]


def _public_names(module: ModuleType) -> set[str]:
    """Public names of hangguard's own that a reader of ``dir(module)`` sees.

    Submodules, ``from __future__`` features and names imported from other libraries
    (``Iterator``, ``Final``) are not part of the surface.
    """
    names = set()
    for n in dir(module):
        obj = getattr(module, n)
        if n.startswith("_") or isinstance(obj, (ModuleType, __future__._Feature)):
            continue
        home = getattr(obj, "__module__", None)
        if isinstance(obj, (type, FunctionType)) and not str(home).startswith("hangguard"):
            continue
        if not isinstance(obj, (type, FunctionType)) and n in dir(typing):
            continue
        names.add(n)
    return names | ({"__version__"} if hasattr(module, "__version__") else set())


@pytest.mark.parametrize("path", sorted(SURFACE))
def test_all_is_pinned_and_matches_the_public_names(path: str) -> None:
    module = importlib.import_module(path)
    assert module.__all__ == SURFACE[path]
    assert _public_names(module) == set(module.__all__), path


@pytest.mark.parametrize("path", sorted(SURFACE))
def test_every_public_name_claims_a_public_module_that_exports_it(path: str) -> None:
    """``__module__`` is the public path (tracebacks and docs name it), never ``_x``."""
    module = importlib.import_module(path)
    for name in module.__all__:
        obj = getattr(module, name)
        if not (isinstance(obj, type) or inspect.isfunction(obj)):
            continue
        home = obj.__module__
        assert home in SURFACE, f"{path}.{name} claims {home}"
        assert name in SURFACE[home], f"{path}.{name} claims {home}, which does not export it"
        if home != path:
            assert getattr(importlib.import_module(home), name) is obj


def test_every_public_module_is_pinned() -> None:
    """A public (non-underscore) module of the package that is not in SURFACE fails here."""
    package = pathlib.Path(hangguard.__file__).parent
    found = {"hangguard"}
    for info in pkgutil.walk_packages([str(package)], prefix="hangguard."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts):
            continue
        found.add(info.name)
    assert found == set(SURFACE)


def test_import_has_no_side_effects() -> None:
    """No provider installed, no thread or loop started, garbage env tolerated."""
    code = textwrap.dedent(
        """
        import os, sys, threading
        for var in ("HANGGUARD_DEFAULT_BUDGET", "HANGGUARD_BUDGETS", "HANGGUARD_JOIN_TIMEOUT",
                    "HANGGUARD_MCP_TIMEOUT", "HANGGUARD_MCP_CONNECT_TIMEOUT",
                    "HANGGUARD_RETRY_ATTEMPTS", "HANGGUARD_CANCEL_GRACE", "HANGGUARD_SERIAL",
                    "HANGGUARD_TRACE_FILE"):
            os.environ[var] = "garbage=,;"
        before = threading.active_count()
        import logging
        handlers = list(logging.getLogger().handlers)
        import hangguard
        from opentelemetry import metrics, trace
        assert trace._TRACER_PROVIDER is None, "a tracer provider was installed"
        assert metrics._internal._METER_PROVIDER is None, "a meter provider was installed"
        assert threading.active_count() == before, "a thread was started"
        assert logging.getLogger().handlers == handlers, "logging was configured"
        assert logging.getLogger("hangguard").handlers == [], "hangguard's logger got a handler"
        assert "mcp" not in sys.modules, "the mcp extra was imported eagerly"
        for extra in ("ray", "httpx", "opentelemetry.sdk"):
            assert extra not in sys.modules, f"{extra} was imported eagerly"
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
