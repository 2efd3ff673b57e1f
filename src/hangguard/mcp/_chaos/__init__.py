"""The chaos MCP server's implementation, shared by ``hangguard chaos-mcp`` and
:mod:`hangguard.testing.chaos` (its public face), so the CLI imports no test-support code."""
