"""Where the time goes: one hangguard scenario under pyinstrument, in its own process.

``python -m bench profile fanout --provider sdk`` prints the call tree of 10,000-task
fan-outs with the SDK installed. Needs pyinstrument (``pip install -e '.[bench]'``).
Only the hangguard side is profiled; the baselines are the SDK's and asyncio's own code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Provider, run_worker

__all__ = ["SCENARIOS", "profile", "run_profile"]


async def _fanout(n: int) -> None:
    from .fanout import _hangguard

    await _hangguard(n)


async def _failure(n: int) -> None:
    from .failure import _hangguard

    await _hangguard(n, False)


async def _timeout(n: int) -> None:
    from .timeout import _hangguard

    await _hangguard(n, False)


async def _retry(n: int) -> None:
    import hangguard
    import hangguard.mcp

    from .retry import _work

    fn = hangguard.retry()(_work)
    for i in range(n * 10):
        await fn(i)


async def _mcp(n: int) -> None:
    import hangguard
    import hangguard.mcp
    from hangguard.testing.chaos import build_chaos_server

    async with hangguard.mcp.McpClient(build_chaos_server(), timeout=30) as client:
        for _ in range(max(1, n // 20)):
            await client.call_tool("echo", {"text": "hello"})


#: Scenario -> (coroutine taking N, what N is).
SCENARIOS: dict[str, tuple[Callable[[int], Awaitable[None]], str]] = {
    "fanout": (_fanout, "tasks per fan-out"),
    "failure": (_failure, "stuck tasks, one fails"),
    "timeout": (_timeout, "stuck tasks, join times out"),
    "retry": (_retry, "x10 retried calls"),
    "mcp": (_mcp, "/20 in-process echo calls"),
}


def profile(params: dict[str, Any]) -> dict[str, str]:
    """Worker: run the scenario ``rounds`` times under the profiler; return its text."""
    try:
        from pyinstrument import Profiler
    except ImportError as exc:
        raise SystemExit(
            "python -m bench profile needs pyinstrument: pip install -e '.[bench]'"
        ) from exc
    scenario, _ = SCENARIOS[params["scenario"]]
    n: int = params["n"]

    async def main() -> str:
        await scenario(min(n, 100))  # warm-up, not profiled
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        for _ in range(params["rounds"]):
            await scenario(n)
        profiler.stop()
        text: str = profiler.output_text(unicode=False, color=False, show_all=params["all"])
        return text

    return {"text": asyncio.run(main())}


def run_profile(scenario: str, provider: Provider, n: int, rounds: int, show_all: bool) -> str:
    """Profile ``scenario`` in a worker under ``provider``; the call tree as text."""
    result = run_worker(
        "bench.profile:profile",
        {"scenario": scenario, "n": n, "rounds": rounds, "all": show_all},
        provider=provider,
    )
    text: str = result["text"]
    return text
