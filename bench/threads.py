"""Thread fan-out: ``hangguard.ThreadGroup`` against raw ``ThreadPoolExecutor.submit`` +
``result()``, per task; and a join around 100 hung threads against its timeout.

Both run on the same pool size (``ThreadPoolExecutor``'s default for this machine): the
raw baseline on a ``ThreadPoolExecutor`` made once, the group on hangguard's shared pool
(its default) and, for reference, on that same executor. Wall-clock time per task, pairs
rotated within each round (a thread fan-out's cost is mostly hand-offs between threads,
which CPU time would not show). With the SDK, the baseline is the raw pool with one SDK
span per task.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "measure_hung", "run"]

SIZES = (1_000, 10_000)
ROUNDS = {1_000: 15, 10_000: 7}
HUNG = 100
HUNG_TIMEOUT = 0.2


def _noop() -> None:
    return None


def _workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: wall seconds per task of each variant, one sample per round."""
    from opentelemetry import trace

    import hangguard

    n: int = params["n"]
    rounds: int = params["rounds"]
    names: list[str] = params["variants"]
    pool = ThreadPoolExecutor(max_workers=_workers())
    tracer = trace.get_tracer("bench")

    def spanned() -> None:
        with tracer.start_as_current_span("task"):
            return None

    def raw(n: int) -> None:
        futures = [pool.submit(_noop) for _ in range(n)]
        for f in futures:
            f.result()

    def raw_span(n: int) -> None:
        futures = [pool.submit(spanned) for _ in range(n)]
        for f in futures:
            f.result()

    def group(n: int) -> None:
        g = hangguard.ThreadGroup("fanout")
        for _ in range(n):
            g.submit(_noop)
        g.join()

    def group_on_pool(n: int) -> None:
        g = hangguard.ThreadGroup("fanout", executor=pool)
        for _ in range(n):
            g.submit(_noop)
        g.join()

    variants: dict[str, Callable[[int], None]] = {
        "raw": raw,
        "raw+span": raw_span,
        "hangguard": group,
        "hangguard-pool": group_on_pool,
    }
    for name in names:  # warm-up: threads started, imports, tracer lookups
        variants[name](min(n, 1000))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            started = time.perf_counter()
            variants[name](n)
            samples[name].append((time.perf_counter() - started) / n)
    pool.shutdown()
    return samples


def measure_hung(params: dict[str, Any]) -> list[float]:
    """Worker: seconds past its timeout that a join around 100 hung threads returns."""
    import hangguard
    from bench._harness import quiet_hangguard_logging

    quiet_hangguard_logging()
    rounds: int = params["rounds"]
    out: list[float] = []
    for _ in range(rounds):
        never = threading.Event()
        pool = ThreadPoolExecutor(max_workers=HUNG)
        g = hangguard.ThreadGroup("hung", executor=pool)
        for _ in range(HUNG):
            g.submit(never.wait)
        started = time.perf_counter()
        try:
            g.join(timeout=HUNG_TIMEOUT)
        except hangguard.JoinTimeout:
            pass
        out.append((time.perf_counter() - started - HUNG_TIMEOUT) * 1e3)
        never.set()
        pool.shutdown()
    return out


def _us(values: list[float]) -> list[float]:
    return [v * 1e6 for v in values]


def run(cfg: Config) -> list[Row]:
    sizes = cfg.sizes or ((1_000,) if cfg.smoke else SIZES)
    rows: list[Row] = []
    for n in sizes:
        rounds = cfg.rounds_or(ROUNDS.get(n, 5))
        size = f"N={n:,}"
        bare = run_worker(
            "bench.threads:measure",
            {"n": n, "rounds": rounds, "variants": ["raw", "hangguard", "hangguard-pool"]},
            provider="none",
        )
        raw = Row(
            "threads", size, "no SDK: raw pool.submit + result()", "us/task", _us(bare["raw"])
        )
        rows.append(raw)
        rows.append(
            Row(
                "threads",
                size,
                "no SDK: hangguard.ThreadGroup",
                "us/task",
                _us(bare["hangguard"]),
                baseline=raw,
                target=Target("ratio", 1.2),
            )
        )
        rows.append(
            Row(
                "threads",
                size,
                "no SDK: ThreadGroup(executor=pool)",
                "us/task",
                _us(bare["hangguard-pool"]),
                baseline=raw,
                note="reference",
            )
        )
        sdk = run_worker(
            "bench.threads:measure",
            {"n": n, "rounds": rounds, "variants": ["raw+span", "hangguard"]},
            provider="sdk",
        )
        raw_sdk = Row(
            "threads", size, "SDK: raw pool + SDK span per task", "us/task", _us(sdk["raw+span"])
        )
        rows.append(raw_sdk)
        rows.append(
            Row(
                "threads",
                size,
                "SDK: hangguard.ThreadGroup",
                "us/task",
                _us(sdk["hangguard"]),
                baseline=raw_sdk,
                target=Target("ratio", 1.15),
            )
        )
    hung = run_worker("bench.threads:measure_hung", {"rounds": cfg.rounds_or(5)}, provider="sdk")
    rows.append(
        Row(
            "threads",
            f"{HUNG} hung",
            f"join(timeout={HUNG_TIMEOUT}): return past the timeout",
            "ms",
            hung,
            target=Target("abs", plus=50.0),
        )
    )
    return rows
