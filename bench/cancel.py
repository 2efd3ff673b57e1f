"""Mass cancel: N tasks that hang, a join that times out after 0.5 s, grace 1 s.

The wall time from the first submit to the join's exit: starting the tasks, the
timeout, cancelling every task, letting them unwind and, for hangguard, the books
(cancel records, the partial results of ``JoinTimeout``, the outcome metric). The
baseline is ``asyncio.timeout`` around an ``asyncio.TaskGroup``, its timer set 0.5 s
after the last task was created, as ``join(timeout=0.5)`` starts its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Config, Row, Target, measure_pairs, run_worker

__all__ = ["measure", "run"]

SIZES = (100_000,)
ROUNDS = 5
TIMEOUT = 0.5
GRACE = "1"


async def _hang() -> None:
    await asyncio.get_running_loop().create_future()


async def _raw(n: int, spans: bool) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(None) as scope, asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(_hang())
            scope.reschedule(loop.time() + TIMEOUT)
    except TimeoutError:
        return time.perf_counter() - started
    raise AssertionError("the timeout did not fire")


async def _hangguard(n: int, spans: bool) -> float:
    import hangguard

    started = time.perf_counter()
    group = hangguard.TaskGroup("cancel")
    for _ in range(n):
        group.submit(_hang)
    try:
        await group.join(timeout=TIMEOUT)
    except hangguard.JoinTimeout:
        return time.perf_counter() - started
    raise AssertionError("the join did not time out")


_VARIANTS: dict[str, Callable[[int, bool], Awaitable[float]]] = {
    "raw": _raw,
    "hangguard": _hangguard,
}


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds from the first submit to the join's exit, one sample per round."""
    return measure_pairs(_VARIANTS, params)


def run(cfg: Config) -> list[Row]:
    """One pair of rows per size, untraced (the issue's figure)."""
    sizes = cfg.sizes or ((1_000,) if cfg.smoke else SIZES)
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        size = f"N={n:,}"
        result = run_worker(
            "bench.cancel:measure",
            {"n": n, "rounds": rounds, "spans": False},
            provider="none",
            env={"HANGGUARD_CANCEL_GRACE": GRACE},
        )
        raw = Row("cancel", size, "asyncio.timeout + asyncio.TaskGroup", "s", result["raw"])
        rows.append(raw)
        rows.append(
            Row(
                "cancel",
                size,
                f"hangguard join(timeout={TIMEOUT:g}), grace {GRACE} s",
                "s",
                result["hangguard"],
                baseline=raw,
                target=Target("ratio", 1.2),
            )
        )
    return rows
