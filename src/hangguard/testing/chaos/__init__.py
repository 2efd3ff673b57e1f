"""The chaos MCP server (needs the ``mcp`` extra): ``python -m hangguard.testing.chaos --help``.

A real MCP server (stdio, SSE, streamable HTTP) whose tools hang, sleep, fail, flake or
stop answering on request, and HTTP-level faults in front of it, for tests of the code
that calls MCP servers::

    from hangguard.testing.chaos import ChaosServer, HttpFault

    async with ChaosServer(fault=HttpFault("status", status=503, first=2)) as chaos:
        ...
"""

from __future__ import annotations

from ...mcp._chaos._server import (
    Blackhole,
    ChaosEvent,
    ChaosRecorder,
    ChaosServer,
    FaultKind,
    HttpFault,
    build_chaos_server,
    closed_port_url,
    main,
    stdio_command,
)

__all__ = [
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
]

# Tracebacks and docs name this public path, not the implementation module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("hangguard.mcp._chaos"):
        _obj.__module__ = __name__
del _name, _obj
