"""Join timeout: N stuck tasks, a join that times out; how far past the deadline it returns.

The overshoot is the time from the deadline to the join's exit: cancelling the tasks,
letting them unwind and, for hangguard, building the partial results. The baseline is
``asyncio.timeout`` around an ``asyncio.TaskGroup`` (tasks in SDK spans when traced).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Config, Row, Stuck, Target, measure_pairs, run_worker

__all__ = ["measure", "run"]

SIZES = (100, 10_000)
ROUNDS = 9
#: The join's timeout, counted from the moment every task is running and stuck.
TIMEOUT = 0.05


class _GcClock:
    """Seconds the cyclic garbage collector has run in this process (a gc callback).

    Each variant reads it at its deadline and at its exit: the difference is the
    collector's share of that overshoot. A full collection walks every live object (10,000
    tasks and their spans here) and lands in whichever window crosses CPython's threshold,
    so it is shown apart from the work each variant does.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


_gc_clock = _GcClock()
#: The collector's seconds inside each variant's last overshoot window.
_gc_in_window: dict[str, float] = {}


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
            gc_before = _gc_clock.seconds
            scope.reschedule(deadline)
    except TimeoutError:
        over = loop.time() - deadline
        _gc_in_window["raw"] = _gc_clock.seconds - gc_before
        return over
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
    gc_before = _gc_clock.seconds
    try:
        await group.join(timeout=TIMEOUT)
    except hangguard.JoinTimeout:
        over = loop.time() - deadline
        _gc_in_window["hangguard"] = _gc_clock.seconds - gc_before
        return over
    raise AssertionError("the join did not time out")


_VARIANTS: dict[str, Callable[[int, bool], Awaitable[float]]] = {
    "raw": _raw,
    "hangguard": _hangguard,
}


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds past the deadline at the join's exit, one sample per round.

    ``<variant>:gc`` holds the collector's seconds inside each of those overshoots.
    """
    gc_seconds: dict[str, list[float]] = {name: [] for name in _VARIANTS}

    def counted(name: str) -> Callable[[int, bool], Awaitable[float]]:
        async def run(n: int, spans: bool) -> float:
            over = await _VARIANTS[name](n, spans)
            gc_seconds[name].append(_gc_in_window[name])
            return over

        return run

    gc.callbacks.append(_gc_clock)
    try:
        samples = measure_pairs({name: counted(name) for name in _VARIANTS}, params)
    finally:
        gc.callbacks.remove(_gc_clock)
    for name, seconds in gc_seconds.items():
        samples[f"{name}:gc"] = seconds[-len(samples[name]) :]  # without the warm-up
    return samples


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
            ours = _ms(result["hangguard"])
            rows.append(
                Row(
                    "timeout",
                    size,
                    f"{label}: hangguard join(timeout=)",
                    "ms",
                    ours,
                    baseline=raw,
                    target=target,
                    note=_gc_note(result),
                )
            )
            if provider == "sdk" and n > 100:
                # The same overshoots with the collector's time in each taken out: what
                # each variant's own work costs, wherever CPython's full collection lands.
                raw_own = Row(
                    "timeout",
                    size,
                    f"{label}: raw, without the collector's time",
                    "ms",
                    _own(result, "raw"),
                )
                rows.append(raw_own)
                rows.append(
                    Row(
                        "timeout",
                        size,
                        f"{label}: hangguard, without the collector's time",
                        "ms",
                        _own(result, "hangguard"),
                        baseline=raw_own,
                        note="reference",
                    )
                )
    return rows


def _own(result: dict[str, list[float]], name: str) -> list[float]:
    return [(a - b) * 1e3 for a, b in zip(result[name], result[f"{name}:gc"], strict=True)]


def _gc_note(result: dict[str, list[float]]) -> str:
    ours, raw = (statistics.median(result[f"{k}:gc"]) * 1e3 for k in ("hangguard", "raw"))
    return f"GC {ours:.0f} ms of it, raw {raw:.0f}"


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]
