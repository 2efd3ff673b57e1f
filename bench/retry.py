"""The retry decorator on its happy path: a call that succeeds at once, against a bare call.

This is the cost every call pays for being retryable, so it must be a few
microseconds at most. ``attempt_timeout`` adds a deadline scope (a timer armed and
cancelled) per call; it is shown for reference, without a target.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "run"]

CALLS = 100_000
ROUNDS = 7
#: The issue's "a few microseconds" on top of 1.1x the bare call.
PLUS_US = 3.0


async def _work(x: int) -> int:
    return x


def _variants() -> dict[str, Callable[[int], Awaitable[int]]]:
    import hangguard

    return {
        "bare": _work,
        "retry": hangguard.retry()(_work),
        "retry+attempt_timeout": hangguard.retry(attempt_timeout=30)(_work),
    }


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds per call of each variant, one sample per round."""
    n: int = params["n"]
    rounds: int = params["rounds"]
    variants = _variants()
    names = list(variants)

    async def loop(fn: Callable[[int], Awaitable[int]], count: int) -> float:
        # CPU time, as in the fan-out: other processes' turns on the core are not ours.
        started = time.process_time()
        for i in range(count):
            await fn(i)
        return (time.process_time() - started) / count

    async def main() -> dict[str, list[float]]:
        for name in names:
            await loop(variants[name], min(n, 1000))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                samples[name].append(await loop(variants[name], n))
        return samples

    return asyncio.run(main())


def run(cfg: Config) -> list[Row]:
    """One process, no SDK (the happy path does no span work either way)."""
    sizes = cfg.sizes or ((5_000,) if cfg.smoke else (CALLS,))
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        result = run_worker("bench.retry:measure", {"n": n, "rounds": rounds}, provider="none")
        size = f"{n:,} calls"
        bare = Row("retry", size, "bare await fn()", "us/call", _us(result["bare"]))
        rows.append(bare)
        rows.append(
            Row(
                "retry",
                size,
                "@hangguard.retry()",
                "us/call",
                _us(result["retry"]),
                baseline=bare,
                target=Target("ratio_plus", 1.1, PLUS_US),
            )
        )
        rows.append(
            Row(
                "retry",
                size,
                "@hangguard.retry(attempt_timeout=30)",
                "us/call",
                _us(result["retry+attempt_timeout"]),
                baseline=bare,
                note="reference",
            )
        )
    return rows


def _us(values: list[float]) -> list[float]:
    return [v * 1e6 for v in values]
