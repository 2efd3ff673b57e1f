"""A fan-out of 100 MCP calls to a dead server, with and without the circuit breaker.

The dead server is refused connections (nothing listens) or a blackhole (it accepts and
never answers: every connect waits for ``connect_timeout``). One fan-out first, which
opens the breaker when it is on; then each round times one more fan-out of 100 calls
from one client. Without the breaker each fan-out pays the connect attempts again (for
a blackhole, the calls' whole timeout); with it, they fail at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._harness import Config, Row, run_worker

__all__ = ["measure", "run"]

ROUNDS = 3
FANOUT = 100


def measure(params: dict[str, Any]) -> list[float]:
    """Worker: seconds per fan-out of ``FANOUT`` calls, one sample per round."""
    import hangguard
    import hangguard.mcp
    from hangguard.testing.chaos import Blackhole, closed_port_url

    rounds: int = params["rounds"]

    async def fanout(client: hangguard.mcp.McpClient) -> float:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(client.call_tool("echo") for _ in range(FANOUT)), return_exceptions=True
        )
        took = time.perf_counter() - started
        bad = [r for r in results if not isinstance(r, hangguard.HangguardError)]
        assert not bad, bad[:3]
        return took

    async def main(url: str) -> list[float]:
        client = hangguard.mcp.McpClient(url, timeout=1.0, connect_timeout=0.25)
        try:
            await fanout(client)  # opens the breaker, when it is on
            return [await fanout(client) for _ in range(rounds)]
        finally:
            await client.aclose(abrupt=True)

    if params["dead"] == "blackhole":
        with Blackhole() as hole:
            return asyncio.run(main(hole.url))
    return asyncio.run(main(closed_port_url()))


def run(cfg: Config) -> list[Row]:
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for dead in ("refused", "blackhole"):
        samples = {}
        for setting in ("off", "failures=5,cooldown=60s"):
            samples[setting] = run_worker(
                "bench.breaker:measure",
                {"rounds": rounds, "dead": dead},
                provider="none",
                env={"HANGGUARD_MCP_BREAKER": setting},
            )
        size = f"{FANOUT} calls, {dead}"
        off = Row("breaker", size, "no breaker", "ms/fan-out", _ms(samples["off"]))
        rows.append(off)
        rows.append(
            Row(
                "breaker",
                size,
                "breaker open (failures=5)",
                "ms/fan-out",
                _ms(samples["failures=5,cooldown=60s"]),
                baseline=off,
            )
        )
    return rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]
