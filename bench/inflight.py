"""The in-flight registry: what registering work costs a fan-out, what a snapshot of N open
entries costs the watcher thread, and how long ``hangguard ps`` takes to answer.

Fan-out: N tasks, each awaiting one ``asyncio.sleep(0)``, bare against each inside
``_inflight.tracking`` (what every guarded op, MCP call and HTTP request does): the
difference is the registry's own cost per task. It has no target here, against bare tasks a
ratio means little; the fan-out benchmark's targets (hangguard.TaskGroup within 1.25x raw)
judge it once the groups register their tasks. Snapshot: ``_inflight.snapshot()`` with N
entries open, without stacks (what the snapshot thread reads every tick) and with them
(what ``ps`` reads). Group entry: what registering a group costs once per group, its
listing a function against its own method held weakly (with the finalizer that drops
the entry of a group collected without a join). ps: one ``_ps.query`` of this process's
own watcher, with N entries open; the issue's bound is 2 s.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "run"]

SIZES = (1_000, 10_000)
ROUNDS = 7


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds per round for each measurement."""
    from hangguard import _inflight, _ps

    n: int = params["n"]
    rounds: int = params["rounds"]

    async def bare() -> None:
        await asyncio.sleep(0)

    async def tracked() -> None:
        with _inflight.tracking(_inflight.OP, "BenchOp"):
            await asyncio.sleep(0)

    async def fan(body: Any, count: int) -> float:
        gc.collect()
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tg.create_task(body())
        return time.perf_counter() - t0

    async def fanout() -> dict[str, list[float]]:
        await fan(bare, 100)
        await fan(tracked, 100)
        out: dict[str, list[float]] = {"raw": [], "tracked": []}
        for r in range(rounds):
            order = [("raw", bare), ("tracked", tracked)]
            for name, body in order[r % 2 :] + order[: r % 2]:
                out[name].append(await fan(body, n))
        return out

    samples = asyncio.run(fanout())

    # A group's entry: its listing is its own method, held weakly (with a finalizer that
    # drops the entry if the group is collected unjoined), against a plain function.
    class Group:
        def children(self) -> list[Any]:
            return []

    def listing() -> list[Any]:
        return []

    groups = [Group() for _ in range(n)]
    for key, of in (("group-plain", lambda g: listing), ("group-weak", lambda g: g.children)):
        samples[key] = []
        for _ in range(rounds):
            gc.collect()
            t0 = time.perf_counter()
            for g in groups:
                _inflight.discard(
                    _inflight.add(_inflight.open_entry(_inflight.GROUP, "G", children=of(g)))
                )
            samples[key].append(time.perf_counter() - t0)

    # N entries held open, registered directly (as the groups register their children).
    entries = [_inflight.add(_inflight.open_entry(_inflight.OP, f"Open{i}")) for i in range(n)]
    try:
        for key, stacks in (("snapshot", False), ("snapshot+stacks", True)):
            samples[key] = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                _inflight.snapshot(stacks=stacks)
                samples[key].append(time.perf_counter() - t0)
        _ps.start()
        samples["ps"] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            _ps.query(os.getpid(), timeout=10)
            samples["ps"].append(time.perf_counter() - t0)
        _ps.stop()
    finally:
        for e in entries:
            _inflight.discard(e)
    return samples


def _us_per(samples: list[float], n: int) -> list[float]:
    return [s / n * 1e6 for s in samples]


def _ms(samples: list[float]) -> list[float]:
    return [s * 1e3 for s in samples]


def run(cfg: Config) -> list[Row]:
    """Fan-out pair, snapshot cost and ps latency per size (no SDK)."""
    sizes = cfg.sizes or ((1_000,) if cfg.smoke else SIZES)
    rounds = cfg.rounds_or(ROUNDS)
    rows: list[Row] = []
    for n in sizes:
        size = f"N={n:,}"
        got = run_worker("bench.inflight:measure", {"n": n, "rounds": rounds}, provider="none")
        raw = Row("inflight", size, "fan-out: bare tasks", "us/task", _us_per(got["raw"], n))
        rows.append(raw)
        rows.append(
            Row(
                "inflight",
                size,
                "fan-out: each task registered (tracking)",
                "us/task",
                _us_per(got["tracked"], n),
                baseline=raw,
                note="reference",
            )
        )
        plain = Row(
            "inflight",
            size,
            "group entry, listing a function: add + discard",
            "us/group",
            _us_per(got["group-plain"], n),
        )
        rows.append(plain)
        rows.append(
            Row(
                "inflight",
                size,
                "group entry, listing its own method (held weakly)",
                "us/group",
                _us_per(got["group-weak"], n),
                baseline=plain,
                note="reference",
            )
        )
        rows.append(
            Row("inflight", size, "snapshot(stacks=False), N open", "ms", _ms(got["snapshot"]))
        )
        rows.append(
            Row(
                "inflight",
                size,
                "snapshot(stacks=True), N open",
                "ms",
                _ms(got["snapshot+stacks"]),
            )
        )
        rows.append(
            Row(
                "inflight",
                size,
                "ps query of its own watcher, N open",
                "ms",
                _ms(got["ps"]),
                target=Target("abs", plus=2000.0),
            )
        )
    return rows
