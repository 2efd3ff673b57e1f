"""The public surface: pinned names, and an import with no side effects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import hangguard

PUBLIC = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert hangguard.__all__ == PUBLIC
    assert sorted(hangguard.__all__) == hangguard.__all__


def test_every_public_name_resolves_and_claims_the_package() -> None:
    for name in hangguard.__all__:
        obj = getattr(hangguard, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == "hangguard", name


def test_no_private_name_leaks_into_the_namespace() -> None:
    public = {n for n in dir(hangguard) if not n.startswith("_")}
    assert public <= set(hangguard.__all__) | {"importlib", "TYPE_CHECKING", "testing"}


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
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
