"""MCP ``call_tool`` latency: ``hangguard.McpClient`` against the raw ``mcp.Client``.

Sequential calls of the chaos server's ``echo`` tool, over streamable HTTP (the server in
a thread of the worker process, on 127.0.0.1) and in-process (the ``MCPServer`` object,
no transport). Both clients talk to the same server in the same run, alternating which
goes first each round; the figure is the mean latency of one call. The guarded call adds
a deadline, the ``hangguard/timeout-ms`` meta, the retry wrapper, the ``execute_tool``
span (when traced) and the HTTP outcome bookkeeping. Target: <= 1.05x.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "run"]

CALLS = (200,)
ROUNDS = 7


async def _timed(call: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call("echo", {"text": "x"})
    return (time.perf_counter() - started) / n


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: mean seconds per call, one sample per round, for each client."""
    import mcp

    import hangguard
    from hangguard.testing.chaos import ChaosServer, build_chaos_server

    n: int = params["n"]
    rounds: int = params["rounds"]
    transport: str = params["transport"]

    async def main() -> dict[str, list[float]]:
        server: Any = build_chaos_server()
        http: ChaosServer | None = None
        if transport == "http":
            http = await ChaosServer().__aenter__()
            server = http.url
        try:
            async with mcp.Client(server) as raw, hangguard.McpClient(server) as guarded:
                clients = {"raw": raw.call_tool, "hangguard": guarded.call_tool}
                for call in clients.values():  # warm: the first call also lists the tools
                    await _timed(call, 5)
                samples: dict[str, list[float]] = {name: [] for name in clients}
                names = list(clients)
                for r in range(rounds):
                    for name in names[r % 2 :] + names[: r % 2]:
                        gc.collect()
                        samples[name].append(await _timed(clients[name], n))
                return samples
        finally:
            if http is not None:
                await http.__aexit__(None, None, None)

    return asyncio.run(main())


def run(cfg: Config) -> list[Row]:
    """Per transport and provider: the raw client's row, then the guarded one against it."""
    sizes = cfg.sizes or ((20,) if cfg.smoke else CALLS)
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        for transport, where in (("http", "streamable HTTP"), ("inproc", "in-process")):
            for provider, label in (("none", "no SDK"), ("sdk", "SDK")):
                result = run_worker(
                    "bench.mcp:measure",
                    {"n": n, "rounds": rounds, "transport": transport},
                    provider=provider,  # type: ignore[arg-type]
                )
                size = f"{where}, {n} calls"
                raw = Row("mcp", size, f"{label}: mcp.Client", "ms", _ms(result["raw"]))
                rows.append(raw)
                rows.append(
                    Row(
                        "mcp",
                        size,
                        f"{label}: hangguard.McpClient",
                        "ms",
                        _ms(result["hangguard"]),
                        baseline=raw,
                        target=Target("ratio", 1.05),
                    )
                )
    return rows


def _ms(samples: list[float]) -> list[float]:
    return [s * 1000 for s in samples]
