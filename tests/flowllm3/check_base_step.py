"""Run in the flowllm 0.3 interpreter (see tests/test_flowllm3.py): real ``BaseStep``
subclasses guarded by this checkout's hangguard. Prints one JSON object with what the test
checks.

Arguments: the chaos MCP server's URL and the base URL of an OpenAI-compatible server that
accepts and never answers, both on 127.0.0.1 and both run by the test, which counts what
they received. The budgets come from ``HANGGUARD_BUDGETS``, as an application sets them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
from agentscope.credential import OpenAICredential
from agentscope.message import Msg, TextBlock
from agentscope.model import OpenAIChatModel
from flowllm.steps.base_step import BaseStep
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard.http import AsyncDeadlineTransport
from hangguard.mcp import McpClient

MCP_URL, LLM_URL = sys.argv[1], sys.argv[2]
QUERIES = ["a", "b", "stuck", "c"]


@hangguard.guarded_op
class McpFanOutStep(BaseStep):
    """Calls one MCP tool per query at once; the "stuck" one never answers."""

    async def execute(self) -> Any:
        assert self.context is not None
        async with McpClient(MCP_URL, timeout=60) as client:
            for query in self.context["queries"]:
                if query == "stuck":
                    self.submit_async_task(client.call_tool, "hang", {})  # type: ignore[attr-defined]
                else:
                    self.submit_async_task(client.call_tool, "echo", {"text": query})  # type: ignore[attr-defined]
            return await self.join_async_task()  # type: ignore[attr-defined]


@hangguard.guarded_op
class LlmStep(BaseStep):
    """One chat call through agentscope's model, on hangguard.http's transport."""

    async def execute(self) -> Any:
        http_client = httpx.AsyncClient(transport=AsyncDeadlineTransport())
        try:
            model = OpenAIChatModel(
                credential=OpenAICredential(api_key="test-key", base_url=LLM_URL),
                model="test-model",
                stream=False,
                client_kwargs={"http_client": http_client},
            )
            message = Msg(name="user", content=[TextBlock(text="hello")], role="user")
            return await model([message])
        finally:
            await http_client.aclose()


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def main() -> dict[str, Any]:
    out: dict[str, Any] = {}

    start = time.monotonic()
    try:
        await McpFanOutStep()(queries=QUERIES)
        out["fanout"] = {"error": None}
    except hangguard.JoinTimeout as exc:
        out["fanout"] = {
            "error": type(exc).__name__,
            "deadline": exc.deadline_name,
            "results": [
                type(r).__name__ if isinstance(r, BaseException) else text_of(r)
                for r in exc.results
            ],
        }
    out["fanout"]["elapsed"] = time.monotonic() - start

    start = time.monotonic()
    try:
        reply = await LlmStep()()
        out["llm"] = {"error": None, "reply": repr(reply)[:500]}
    except hangguard.DeadlineExceeded as exc:
        out["llm"] = {
            "error": type(exc).__name__,
            "deadline": exc.deadline_name,
            "message": str(exc),
        }
    out["llm"]["elapsed"] = time.monotonic() - start
    return out


if __name__ == "__main__":
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with hangguard.use_providers(tracer_provider=provider):
        result = asyncio.run(main())
    result["spans"] = [
        {
            "name": s.name,
            "attributes": dict(s.attributes or {}),
            "status": s.status.status_code.name,
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps(result, default=str))
