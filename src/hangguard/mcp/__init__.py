"""MCP calls that never hang: the client, the server-side deadline middleware, the errors.

Needs the ``mcp`` extra (``pip install 'hangguard[mcp]'``)::

    from hangguard.mcp import McpClient

    async with McpClient("http://127.0.0.1:8000/mcp", timeout=30) as client:
        result = await client.call_tool("search", {"query": "segment revenue"})

Every call is bounded by ``min(timeout, hangguard.remaining())``, retried within that
budget when the failure is transient, and traced as an ``execute_tool <tool>`` span;
the caller's remaining budget travels in ``_meta["hangguard/timeout-ms"]`` so that a
server running :class:`DeadlineMiddleware` stops when nobody waits any more.
"""

try:
    import mcp as _mcp_sdk  # noqa: F401  (only to fail early with the install hint)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"hangguard.mcp needs the mcp extra: pip install 'hangguard[mcp]' ({exc})"
    ) from exc

from .._exceptions import (
    McpCallError,
    McpCircuitOpen,
    McpConnectError,
    McpError,
    McpToolError,
    McpUnknownToolError,
)
from ._client import McpClient
from ._meta import TIMEOUT_META_KEY
from ._server import DeadlineMiddleware

__all__ = [
    "TIMEOUT_META_KEY",
    "DeadlineMiddleware",
    "McpCallError",
    "McpCircuitOpen",
    "McpClient",
    "McpConnectError",
    "McpError",
    "McpToolError",
    "McpUnknownToolError",
]

for _name in ("McpClient", "DeadlineMiddleware"):
    globals()[_name].__module__ = __name__
del _name
