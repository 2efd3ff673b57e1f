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
import logging
from typing import Any

import hangguard
import hangguard.mcp
from hangguard.testing import BaseAsyncOp  # flowllm 0.2's BaseAsyncOp, for the example
from hangguard.testing.chaos import ChaosServer, HttpFault

logger = logging.getLogger("company_segment_factor")


class SearchMcpOp(BaseAsyncOp):
    """flowllm's ``BaseMcpOp``: one MCP tool call, the client bounded by ``timeout``."""

    def __init__(
        self,
        mcp_name: str = "search",
        config: dict[str, Any] | None = None,
        tool_name: str = "echo",
        timeout: float = 30.0,
        ops: list[BaseAsyncOp] | None = None,
    ) -> None:
        super().__init__(ops=ops)
        self.mcp_name = mcp_name
        self.config = config or {}
        self.tool_name = tool_name
        self.timeout = timeout

    async def async_execute(self) -> str:
        async with hangguard.mcp.McpClient(
            name=self.mcp_name, config=self.config, timeout=self.timeout
        ) as client:
            result = await client.call_tool(
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


def build_op(search_url: str, backup_url: str, *, mcp_timeout: float, join_timeout: float) -> Any:
    """The op tree: every query goes to the search server and to the backup server."""
    config = {"mcpServers": {"search": {"url": search_url}, "backup": {"url": backup_url}}}
    sources: list[BaseAsyncOp] = [
        SearchMcpOp("search", config, timeout=mcp_timeout),
        SearchMcpOp("backup", config, timeout=mcp_timeout),
    ]
    return CompanySegmentFactorOp(join_timeout, ops=sources)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    never_answers = HttpFault("never_answer", methods={"tools/call"})
    async with ChaosServer() as search, ChaosServer(fault=never_answers) as backup:
        op = build_op(search.url, backup.url, mcp_timeout=2.0, join_timeout=5.0)
        found = await op.async_call(queries=["segment revenue", "gross margin", "headcount"])
        print(f"partial results ({len(found)} of 6 searches): {found}")


if __name__ == "__main__":
    asyncio.run(main())
