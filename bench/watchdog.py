"""The loop watchdog: fan-out throughput with it on against off, and detection latency.

Throughput: ``hangguard.TaskGroup`` fan-out of N no-op tasks, CPU time per task, with
the watchdog watching the loop (threshold 0.1 s) against the same without, pairs rotated
within each round. Latency: the loop blocked by ``time.sleep(0.5)``; from the start of
the block to the moment the monitor sampled the blocked stack, against threshold + 20 ms.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "measure_detection", "run"]

SIZES = (10_000,)
ROUNDS = {10_000: 9}
THRESHOLD = 0.1


async def _noop() -> None:
    return None


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    import hangguard

    n: int = params["n"]
    rounds: int = params["rounds"]

    async def fan_out() -> None:
        group = hangguard.TaskGroup("fanout")
        for _ in range(n):
            group.submit(_noop)
        await group.join()

    async def main() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {"off": [], "on": []}
        await fan_out()
        for r in range(rounds):
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for name in order:
                dog = hangguard.watch_loop(THRESHOLD) if name == "on" else None
                gc.collect()
                started = time.process_time()
                await fan_out()
                samples[name].append((time.process_time() - started) / n)
                if dog is not None:
                    dog.stop()
        return samples

    return asyncio.run(main())


def measure_detection(params: dict[str, Any]) -> list[float]:
    """Worker: ms from the start of a block to its sampling by the monitor."""
    import hangguard
    from bench._harness import quiet_hangguard_logging

    quiet_hangguard_logging()
    rounds: int = params["rounds"]

    async def main() -> list[float]:
        dog = hangguard.watch_loop(THRESHOLD)
        out: list[float] = []
        for i in range(rounds):
            await asyncio.sleep(0.05 + 0.007 * i)  # the block starts anywhere in a beat
            started = time.monotonic()
            time.sleep(0.5)  # noqa: ASYNC251 - the blocking call being detected
            await asyncio.sleep(0.05)
            block = dog._last_block
            assert block is not None
            out.append((block.detected - started) * 1e3)
            dog._rates.clear()  # the same frame each time: report every one
        dog.stop()
        return out

    return asyncio.run(main())


def _us(values: list[float]) -> list[float]:
    return [v * 1e6 for v in values]


def run(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    for n in cfg.sizes or ((1_000,) if cfg.smoke else SIZES):
        rounds = cfg.rounds_or(ROUNDS.get(n, 5))
        size = f"N={n:,}"
        data = run_worker("bench.watchdog:measure", {"n": n, "rounds": rounds}, provider="sdk")
        off = Row(
            "watchdog", size, "SDK: TaskGroup fan-out, watchdog off", "us/task", _us(data["off"])
        )
        rows.append(off)
        rows.append(
            Row(
                "watchdog",
                size,
                f"SDK: same, watchdog on ({THRESHOLD:g} s)",
                "us/task",
                _us(data["on"]),
                baseline=off,
                target=Target("ratio", 1.02),
            )
        )
    latency = run_worker(
        "bench.watchdog:measure_detection", {"rounds": cfg.rounds_or(5)}, provider="sdk"
    )
    rows.append(
        Row(
            "watchdog",
            "block 0.5 s",
            "detection: block start to stack sampled",
            "ms",
            latency,
            target=Target("abs", plus=THRESHOLD * 1e3 + 20),
        )
    )
    return rows
