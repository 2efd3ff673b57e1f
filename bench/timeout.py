"""Join timeout: N stuck tasks, a join that times out; how far past the deadline it returns.

The overshoot is the time from the deadline to the join's exit: cancelling the tasks,
letting them unwind and, for hangguard, building the partial results. The baseline is
``asyncio.timeout`` around an ``asyncio.TaskGroup`` (tasks in SDK spans when traced).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Config, Row, Stuck, Target, measure_pairs, run_worker

__all__ = ["measure", "run"]

SIZES = (100, 10_000)
ROUNDS = 9
#: The join's timeout, counted from the moment every task is running and stuck.
TIMEOUT = 0.05


async def _raw(n: int, spans: bool) -> float:
    s = Stuck(n, spans)
    loop = asyncio.get_running_loop()
    body = s.stuck_in_span if spans else s.stuck
    deadline = 0.0
    try:
        async with asyncio.timeout(None) as scope, asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(body())
            await s.all_started.wait()
            deadline = loop.time() + TIMEOUT
            scope.reschedule(deadline)
    except TimeoutError:
        return loop.time() - deadline
    raise AssertionError("the timeout did not fire")


async def _hangguard(n: int, spans: bool) -> float:
    import hangguard

    s = Stuck(n, False)
    loop = asyncio.get_running_loop()
    group = hangguard.TaskGroup("timeout")
    for _ in range(n):
        group.submit(s.stuck)
    await s.all_started.wait()
    deadline = loop.time() + TIMEOUT
    try:
        await group.join(timeout=TIMEOUT)
    except hangguard.JoinTimeout:
        return loop.time() - deadline
    raise AssertionError("the join did not time out")


_VARIANTS: dict[str, Callable[[int, bool], Awaitable[float]]] = {
    "raw": _raw,
    "hangguard": _hangguard,
}


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds past the deadline at the join's exit, one sample per round."""
    return measure_pairs(_VARIANTS, params)


def run(cfg: Config) -> list[Row]:
    """Untraced and traced, one pair of rows each per size."""
    sizes = cfg.sizes or ((100, 1_000) if cfg.smoke else SIZES)
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        size = f"N={n:,}"
        for provider, label, raw_label in (
            ("none", "no SDK", "raw asyncio.timeout + TaskGroup"),
            ("sdk", "SDK", "raw asyncio.timeout + TaskGroup + spans"),
        ):
            result = run_worker(
                "bench.timeout:measure",
                {"n": n, "rounds": rounds, "spans": provider == "sdk"},
                provider="sdk" if provider == "sdk" else "none",
            )
            raw = Row("timeout", size, f"{label}: {raw_label}", "ms", _ms(result["raw"]))
            rows.append(raw)
            # The targets: 1.2x the raw overshoot, and 5 ms flat for 100 tasks
            # (there the raw overshoot is a fraction of a millisecond, so a ratio is noise).
            target = Target("abs", plus=5.0) if n <= 100 else Target("ratio", 1.2)
            rows.append(
                Row(
                    "timeout",
                    size,
                    f"{label}: hangguard join(timeout=)",
                    "ms",
                    _ms(result["hangguard"]),
                    baseline=raw,
                    target=target,
                )
            )
    return rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]
