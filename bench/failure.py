"""Fail-fast: one of N stuck tasks fails; time from the failure to the join's exit.

Every other task is parked on a future of its own that nobody resolves (a hung read),
so the whole cost is cancelling them, letting them unwind and getting out. The baseline
is ``asyncio.TaskGroup`` (each task inside an SDK span when the SDK is installed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Config, Row, Stuck, Target, measure_pairs, run_worker

__all__ = ["Boom", "measure", "run"]

SIZES = (10_000,)
ROUNDS = 9


class Boom(Exception):
    """The one failure."""


class _Scenario(Stuck):
    """N stuck tasks plus one that fails when ``fire`` is set, stamping the time first."""

    def __init__(self, n: int, spans: bool) -> None:
        super().__init__(n, spans)
        self.fire = asyncio.Event()
        self.failed_at = 0.0

    async def fail(self) -> None:
        await self.fire.wait()
        self.failed_at = time.perf_counter()
        raise Boom("the one failure")


async def _raw(n: int, spans: bool) -> float:
    s = _Scenario(n, spans)
    body = s.stuck_in_span if spans else s.stuck
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(body())
            tg.create_task(s.fail())
            await s.all_started.wait()
            s.fire.set()
    except* Boom:
        exited = time.perf_counter()
    else:
        raise AssertionError("the group did not fail")
    return exited - s.failed_at


async def _hangguard(n: int, spans: bool) -> float:
    import hangguard

    s = _Scenario(n, False)
    group = hangguard.TaskGroup("failure")
    for _ in range(n):
        group.submit(s.stuck)
    group.submit(s.fail)
    await s.all_started.wait()
    s.fire.set()
    try:
        await group.join()
    except Boom:
        return time.perf_counter() - s.failed_at
    raise AssertionError("the group did not fail")


_VARIANTS: dict[str, Callable[[int, bool], Awaitable[float]]] = {
    "raw": _raw,
    "hangguard": _hangguard,
}


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds from the failure to the join's exit, one sample per round."""
    return measure_pairs(_VARIANTS, params)


def run(cfg: Config) -> list[Row]:
    """Untraced and traced, one pair of rows each per size."""
    sizes = cfg.sizes or ((1_000,) if cfg.smoke else SIZES)
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        size = f"N={n:,}"
        for provider, label, raw_label in (
            ("none", "no SDK", "raw asyncio.TaskGroup"),
            ("sdk", "SDK", "raw TaskGroup + SDK spans"),
        ):
            result = run_worker(
                "bench.failure:measure",
                {"n": n, "rounds": rounds, "spans": provider == "sdk"},
                provider="sdk" if provider == "sdk" else "none",
            )
            raw = Row("failure", size, f"{label}: {raw_label}", "ms", _ms(result["raw"]))
            rows.append(raw)
            rows.append(
                Row(
                    "failure",
                    size,
                    f"{label}: hangguard.TaskGroup.join",
                    "ms",
                    _ms(result["hangguard"]),
                    baseline=raw,
                    target=Target("ratio", 1.2),
                )
            )
    return rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]
