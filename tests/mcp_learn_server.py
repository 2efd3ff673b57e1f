"""An MCP server whose tools count their executions in a file (the SDK's or fastmcp).

``python tests/mcp_learn_server.py --impl mcp|fastmcp --log FILE --state FILE
[--port N] [--version V]``: streamable HTTP on 127.0.0.1:N, or stdio without ``--port``.

Each execution of ``job_read`` (readOnlyHint), ``job_write`` (no hints) or ``job``
appends its name to ``--log`` first; the first execution of a tool ever recorded there
hangs (the test kills the server under it), later ones answer. ``job`` is read-only
unless ``--state`` holds ``write``; the tool ``retag`` (the SDK's server) writes that,
re-registers ``job`` without its hint and sends ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations


def _executed(log: Path, tool: str) -> int:
    with log.open("a") as f:
        f.write(tool + "\n")
    return log.read_text().splitlines().count(tool)


async def _run(log: Path, tool: str) -> str:
    if _executed(log, tool) == 1:
        await asyncio.Event().wait()  # the first execution hangs until the server dies
    return f"{tool} done"


def build_mcp(args: argparse.Namespace) -> Any:
    server = MCPServer("learn", version=args.version)
    read_only = ToolAnnotations(read_only_hint=True)
    log, state = Path(args.log), Path(args.state)

    @server.tool(annotations=read_only)
    async def job_read() -> str:
        return await _run(log, "job_read")

    @server.tool()
    async def job_write() -> str:
        return await _run(log, "job_write")

    async def job() -> str:
        return await _run(log, "job")

    def add_job() -> None:
        hints = None if state.exists() and state.read_text() == "write" else read_only
        server.add_tool(job, name="job", annotations=hints)

    add_job()

    @server.tool()
    async def retag(ctx: Context) -> str:
        state.write_text("write")  # noqa: ASYNC240 (a few bytes, in a test server)
        server.remove_tool("job")
        add_job()
        # To subscribers (2026-07-28), and on the session (earlier revisions).
        await ctx.notify_tools_changed()
        await ctx.session.send_tool_list_changed()
        return "retagged"

    return server


def build_fastmcp(args: argparse.Namespace) -> Any:
    from fastmcp import FastMCP

    server = FastMCP("learn", version=args.version)
    read_only = {"readOnlyHint": True}
    log, state = Path(args.log), Path(args.state)

    @server.tool(annotations=read_only)
    async def job_read() -> str:
        return await _run(log, "job_read")

    @server.tool
    async def job_write() -> str:
        return await _run(log, "job_write")

    @server.tool(annotations=None if state.exists() and state.read_text() == "write" else read_only)
    async def job() -> str:
        return await _run(log, "job")

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["mcp", "fastmcp"], required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    server = build_mcp(args) if args.impl == "mcp" else build_fastmcp(args)
    if args.port is None:
        server.run("stdio") if args.impl == "mcp" else server.run("stdio", show_banner=False)
        return
    if args.impl == "fastmcp":
        server.run("http", host="127.0.0.1", port=args.port, path="/mcp", show_banner=False)
        return
    import uvicorn

    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
