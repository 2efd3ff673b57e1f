"""The chaos MCP server (needs the ``mcp`` extra): ``python -m hangguard.testing.chaos --help``.

See :mod:`hangguard.testing._chaos` for what it does::

    from hangguard.testing.chaos import ChaosServer, HttpFault

    async with ChaosServer(fault=HttpFault("status", status=503, first=2)) as chaos:
        ...
"""

from __future__ import annotations

import sys

from ._chaos import (
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

if __name__ == "__main__":
    sys.exit(main())
