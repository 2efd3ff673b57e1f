"""Fan-out: N no-op tasks submitted and joined, per task, against raw ``asyncio.TaskGroup``.

Without an SDK the baseline is the bare ``asyncio.TaskGroup`` (and, for reference, the
same with a span from the API's no-op tracer, which is what instrumenting blindly costs);
with the SDK (BatchSpanProcessor, exporter that drops everything) it is the raw group
with one SDK span per task, which is what a user would write to see their tasks.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "run"]

SIZES = (1_000, 10_000, 100_000)
ROUNDS = {1_000: 15, 10_000: 9, 100_000: 5}


async def _noop() -> None:
    return None


async def _raw(n: int) -> None:
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(_noop())


async def _raw_spans(n: int) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")

    async def task() -> None:
        with tracer.start_as_current_span("task"):
            return None

    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(task())


async def _hangguard(n: int) -> None:
    import hangguard

    group = hangguard.TaskGroup("fanout")
    for _ in range(n):
        group.submit(_noop)
    await group.join()


async def _hangguard_read(n: int) -> None:
    """The same fan-out while a reader (``hangguard ps``, a snapshot timer) reads the
    in-flight registry every 10 ms on another thread: the group lists its tasks then."""
    import threading

    from hangguard import _inflight

    stop = threading.Event()

    def read() -> None:
        while not stop.wait(0.01):
            _inflight.snapshot(stacks=False)

    reader = threading.Thread(target=read, name="registry-reader")
    reader.start()
    try:
        await _hangguard(n)
    finally:
        stop.set()
        reader.join()


_VARIANTS: dict[str, Callable[[int], Awaitable[None]]] = {
    "raw": _raw,
    "raw+span": _raw_spans,
    "hangguard": _hangguard,
    "hangguard+read": _hangguard_read,
}


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: CPU seconds per task of each variant, one sample per round.

    CPU time of the process, not the wall clock: on a shared machine the wall clock
    also counts the time other processes held the core, which is noise here (the
    exporter thread's CPU is counted, alike for every variant).
    """
    n: int = params["n"]
    rounds: int = params["rounds"]
    names: list[str] = params["variants"]

    # With the SDK, each variant's spans are exported inside its own timing: the batch
    # processor's thread otherwise exports one variant's leftover spans while the next
    # variant is being timed, so each pays an unknown part of the other's export.
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)

    async def main() -> dict[str, list[float]]:
        for name in names:  # warm-up: imports, tracer lookups, allocator arenas
            await _VARIANTS[name](min(n, 1000))
        if flush is not None:
            flush()
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            # Rotating the order spreads any drift within a round over every variant.
            for name in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                started = time.process_time()
                await _VARIANTS[name](n)
                if flush is not None:
                    flush()
                samples[name].append((time.process_time() - started) / n)
        return samples

    return asyncio.run(main())


def _us(values: list[float]) -> list[float]:
    return [v * 1e6 for v in values]


def run(cfg: Config) -> list[Row]:
    """Measure every size in both provider states; one row per variant."""
    sizes = cfg.sizes or ((1_000,) if cfg.smoke else SIZES)
    rows: list[Row] = []
    for n in sizes:
        rounds = cfg.rounds_or(ROUNDS.get(n, 5))
        size = f"N={n:,}"
        bare = run_worker(
            "bench.fanout:measure",
            {
                "n": n,
                "rounds": rounds,
                "variants": ["raw", "raw+span", "hangguard", "hangguard+read"],
            },
            provider="none",
        )
        raw = Row("fanout", size, "no SDK: raw asyncio.TaskGroup", "us/task", _us(bare["raw"]))
        rows.append(raw)
        rows.append(
            Row(
                "fanout",
                size,
                "no SDK: raw + API no-op span",
                "us/task",
                _us(bare["raw+span"]),
                baseline=raw,
                note="reference",
            )
        )
        rows.append(
            Row(
                "fanout",
                size,
                "no SDK: hangguard.TaskGroup",
                "us/task",
                _us(bare["hangguard"]),
                baseline=raw,
                target=Target("ratio", 1.25),
            )
        )
        rows.append(
            Row(
                "fanout",
                size,
                "no SDK: hangguard.TaskGroup, registry read every 10 ms",
                "us/task",
                _us(bare["hangguard+read"]),
                baseline=raw,
                note="reference",
            )
        )
        sdk = run_worker(
            "bench.fanout:measure",
            {"n": n, "rounds": rounds, "variants": ["raw+span", "hangguard"]},
            provider="sdk",
        )
        raw_sdk = Row(
            "fanout", size, "SDK: raw TaskGroup + SDK span", "us/task", _us(sdk["raw+span"])
        )
        rows.append(raw_sdk)
        rows.append(
            Row(
                "fanout",
                size,
                "SDK: hangguard.TaskGroup",
                "us/task",
                _us(sdk["hangguard"]),
                baseline=raw_sdk,
                target=Target("ratio", 1.15),
            )
        )
        # What setup_tracing's defaults cost: the meter provider too, so the group's
        # per-task outcome counter records for real. Shown for reference.
        metered = run_worker(
            "bench.fanout:measure",
            {"n": n, "rounds": rounds, "variants": ["raw+span", "hangguard"]},
            provider="sdk+metrics",
        )
        raw_metered = Row(
            "fanout",
            size,
            "SDK+metrics: raw TaskGroup + SDK span",
            "us/task",
            _us(metered["raw+span"]),
        )
        rows.append(raw_metered)
        rows.append(
            Row(
                "fanout",
                size,
                "SDK+metrics: hangguard.TaskGroup",
                "us/task",
                _us(metered["hangguard"]),
                baseline=raw_metered,
                note="reference",
            )
        )
    return rows
