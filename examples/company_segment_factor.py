"""flowllm's ``CompanySegmentFactorOp``, guarded by hangguard, against real MCP servers.

The op fans out one search per (source, query) as MCP tool calls with
``submit_async_task`` and joins them with ``join_async_task(timeout=...,
return_exceptions=True)``, as flowllm's user guide recommends. One source is healthy;
the other never answers. Unguarded, that op hangs for good; guarded, every search ends
within its MCP timeout, the op returns the partial results, and the trace shows
op -> group -> task -> execute_tool -> MCP client span -> MCP server span, all in one
trace. Run it (the MCP servers are hangguard's chaos server, in-process)::

    python examples/company_segment_factor.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import hangguard
import hangguard.mcp
from hangguard.testing import BaseAsyncOp  # flowllm 0.2's BaseAsyncOp, for the example
from hangguard.testing.chaos import ChaosServer, HttpFault

logger = logging.getLogger("company_segment_factor")


class SearchMcpOp(BaseAsyncOp):
    """flowllm's ``BaseMcpOp``: one MCP tool call, on the client of its server.

    ``copy()`` passes the same client to every copy, so all the searches that go to one
    server share its connection: one connect and handshake for the fan-out, not one per
    search taken from each search's budget.
    """

    def __init__(
        self,
        client: hangguard.mcp.McpClient,
        tool_name: str = "echo",
        ops: list[BaseAsyncOp] | None = None,
    ) -> None:
        super().__init__(ops=ops)
        self.client = client
        self.tool_name = tool_name

    async def async_execute(self) -> str:
        result = await self.client.call_tool(
            self.tool_name, arguments={"text": self.context.query}, raise_on_error=True
        )
        return str(result.structured_content["result"] if result.structured_content else "")


@hangguard.guarded_op
class CompanySegmentFactorOp(BaseAsyncOp):
    """Search every source for every query; keep what came back in time."""

    def __init__(self, join_timeout: float = 120.0, ops: list[BaseAsyncOp] | None = None) -> None:
        super().__init__(ops=ops)
        self.join_timeout = join_timeout

    async def async_execute(self) -> list[str]:
        for source in self.ops:
            for query in self.context.queries:
                search_op = source.copy()
                self.submit_async_task(search_op.async_call, query=query)
        try:
            results = await self.join_async_task(timeout=self.join_timeout, return_exceptions=True)
        except TimeoutError as exc:
            # hangguard.JoinTimeout: the unfinished searches were cancelled, and the
            # finished ones are still here.
            results = getattr(exc, "results", [])
        success = [r for r in results if not isinstance(r, Exception)]
        failed = [r for r in results if isinstance(r, Exception)]
        logger.info("Success: %d, Failed: %d", len(success), len(failed))
        return success


@contextlib.asynccontextmanager
async def search_sources(
    search_url: str, backup_url: str, *, mcp_timeout: float
) -> AsyncIterator[list[BaseAsyncOp]]:
    """One search op per server, each with its one client; the clients close at the end."""
    config = {"mcpServers": {"search": {"url": search_url}, "backup": {"url": backup_url}}}
    async with (
        hangguard.mcp.McpClient(name="search", config=config, timeout=mcp_timeout) as search,
        hangguard.mcp.McpClient(name="backup", config=config, timeout=mcp_timeout) as backup,
    ):
        yield [SearchMcpOp(search), SearchMcpOp(backup)]


def build_op(sources: list[BaseAsyncOp], *, join_timeout: float) -> Any:
    """The op tree: every query goes to every source (the search and the backup server)."""
    return CompanySegmentFactorOp(join_timeout, ops=sources)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    never_answers = HttpFault("never_answer", methods={"tools/call"})
    async with (
        ChaosServer() as search,
        ChaosServer(fault=never_answers) as backup,
        search_sources(search.url, backup.url, mcp_timeout=2.0) as sources,
    ):
        op = build_op(sources, join_timeout=5.0)
        found = await op.async_call(queries=["segment revenue", "gross margin", "headcount"])
        print(f"partial results ({len(found)} of 6 searches): {found}")


if __name__ == "__main__":
    asyncio.run(main())
