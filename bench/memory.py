"""Memory: a million traced tasks in batches; the resident set must not keep growing.

Each batch is a fresh group of no-op tasks, joined, with the SDK installed (every task
makes a span). The start is measured after one warm-up batch, so that the allocator
arenas and caches a batch needs in steady state count as the start, not as growth;
what is left after the last batch, beyond that, is what a long-running service would
accumulate. Raw ``asyncio.TaskGroup`` with one SDK span per task runs too, for reference.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from ._harness import Config, Row, Target, rss_bytes, run_worker

__all__ = ["measure", "run"]

TOTAL = 1_000_000
BATCH = 10_000
MIB = 1024 * 1024


async def _noop() -> None:
    return None


async def _hangguard_batch(n: int) -> None:
    import hangguard

    group = hangguard.TaskGroup("batch")
    for _ in range(n):
        group.submit(_noop)
    await group.join()


async def _raw_batch(n: int) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")

    async def task() -> None:
        with tracer.start_as_current_span("task"):
            return None

    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(task())


def measure(params: dict[str, Any]) -> dict[str, float]:
    """Worker: RSS after a warm-up batch, the peak, and after ``total`` tasks."""
    total: int = params["total"]
    batch: int = params["batch"]
    run_batch = _hangguard_batch if params["variant"] == "hangguard" else _raw_batch

    async def main() -> dict[str, float]:
        await run_batch(batch)
        gc.collect()
        start = rss_bytes()
        peak = start
        started = time.perf_counter()
        for done in range(batch, total + 1, batch):
            await run_batch(batch)
            if done % (batch * 10) == 0:
                peak = max(peak, rss_bytes())
        elapsed = time.perf_counter() - started
        gc.collect()
        end = rss_bytes()
        return {
            "start": start,
            "peak": max(peak, end),
            "end": end,
            "us_per_task": elapsed / total * 1e6,
        }

    return asyncio.run(main())


def run(cfg: Config) -> list[Row]:
    """One worker per variant, each with the SDK installed."""
    sizes = cfg.sizes or ((20_000,) if cfg.smoke else (TOTAL,))
    rows: list[Row] = []
    for total in sizes:
        size = f"{total:,} tasks"
        for variant, label, target in (
            ("raw", "raw TaskGroup + SDK span", None),
            ("hangguard", "hangguard.TaskGroup", Target("abs", plus=5.0)),
        ):
            result = run_worker(
                "bench.memory:measure",
                {"total": total, "batch": BATCH, "variant": variant},
                provider="sdk",
            )
            growth = (result["end"] - result["start"]) / MIB
            rows.append(
                Row(
                    "memory",
                    size,
                    f"{label}, batches of {BATCH:,}",
                    "MiB growth",
                    [growth],
                    target=target,
                    note=(
                        f"start {result['start'] / MIB:.0f} MiB, peak {result['peak'] / MIB:.0f}"
                        f" MiB, {result['us_per_task']:.1f} us/task"
                    ),
                )
            )
    return rows
