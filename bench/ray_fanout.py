"""Ray (``hangguard.ray.RemoteGroup``) against raw Ray, on a local 2-CPU Ray started here.

* fan-out: N short tasks, ``group.submit`` x N + ``join`` vs ``ray.get([f.remote(...)])``,
  then the same with the driver's ``hangguard ps`` watcher running (what ``HANGGUARD_PS=1``
  or ``setup_tracing()`` starts): each task then also reports its node to the driver's
  node book (a ``num_cpus=0`` actor), the in-flight cost that issue 19 left unmeasured;
* failure: 1 task fails, N-1 hang; seconds from the failure (stamped by the task) to the
  join's exit vs a raw loop (``ray.wait`` until the failure, then ``ray.cancel`` each ref);
* abandoned: K joins that time out around a task holding a 1 MiB result and a task that
  hangs; the object store's use and the live ``ObjectRef`` count after them, vs before.

Every address Ray binds is 127.0.0.1. The store's use is read in the driver's process
(Ray's function behind ``ray memory --stats-only``), not by running the ``ray`` CLI: the
CLI is a second client that must find the cluster and its auth token on its own
(``RAY_AUTH_MODE=token``), the driver already has both.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
from typing import Any

from ._harness import Config, Row, Target, run_worker

__all__ = ["measure", "run"]

FANOUT = 1_000
FAILURE = 100
ABANDONED = 100
ROUNDS = 5
MIB = 1024 * 1024


def noop(i: int) -> int:
    return i


def fail_after(seconds: float) -> None:
    time.sleep(seconds)
    raise RuntimeError(f"failed at {time.time():.6f}")


def hang() -> None:
    while True:
        time.sleep(0.02)


def big() -> bytes:
    return b"x" * MIB


def _store_used() -> tuple[float, int]:
    """The object store's use in MiB and its object count, as ``ray memory`` reports them."""
    import ray

    # Ray has no public Python API for the store's use without the dashboard (the state
    # API needs ray[default]); this is the function the CLI calls, run in this driver.
    from ray._private.internal_api import memory_summary

    out = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)
    match = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", out)
    if match is None:
        raise RuntimeError(f"cannot read the object store's use from: {out[-500:]!r}")
    return float(match.group(1)), int(match.group(2))


def _live_refs() -> int:
    import ray

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, ray.ObjectRef))


def _settle(done: Any, at_most: float) -> None:
    """Look every 0.2 s until ``done()`` or ``at_most`` seconds have passed."""
    end = time.monotonic() + at_most
    while not done() and time.monotonic() < end:
        time.sleep(0.2)


def _failed_at(exc: BaseException) -> float:
    return float(str(exc).rsplit("failed at ", 1)[1].split()[0])


def measure(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: start Ray, run the three scenarios, return their samples."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from hangguard import JoinTimeout, _ps
    from hangguard.ray import RemoteGroup, _force

    ray.init(
        address="local",  # a cluster of its own, never one another process started
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    out: dict[str, Any] = {
        "raw": [],
        "hangguard": [],
        "raw_ps": [],
        "hangguard_ps": [],
        "fail_raw": [],
        "fail_hangguard": [],
        "auth_mode": os.environ.get("RAY_AUTH_MODE", "(unset)"),
    }
    n, rounds = params["n"], params["rounds"]
    remote_noop = ray.remote(noop)
    remote_fail = ray.remote(fail_after)
    remote_hang = ray.remote(hang)

    def raw_fanout() -> float:
        began = time.perf_counter()
        ray.get([remote_noop.remote(i) for i in range(n)])
        return time.perf_counter() - began

    def guarded_fanout() -> float:
        began = time.perf_counter()
        group = RemoteGroup("bench")
        for i in range(n):
            group.submit(noop, i)
        group.join()
        return time.perf_counter() - began

    raw_fanout(), guarded_fanout()  # warm-up: workers started, functions exported
    for suffix in ("", "_ps"):
        if suffix:
            _ps.start()  # the driver's ps watcher: tasks now report their node to the book
            guarded_fanout()  # warm-up: the node book actor started
        for r in range(rounds):
            pair = (raw_fanout, guarded_fanout) if r % 2 == 0 else (guarded_fanout, raw_fanout)
            for fn in pair:
                out[("raw" if fn is raw_fanout else "hangguard") + suffix].append(fn())
    _ps.stop()

    m = params["failure"]
    for _ in range(rounds):
        refs = [remote_fail.remote(0.5)] + [remote_hang.remote() for _ in range(m - 1)]
        try:
            ready, rest = ray.wait(refs, num_returns=1)
            ray.get(ready[0])
        except Exception as exc:
            # Only the unfinished ones: ray.cancel of finished tasks in a loop like this
            # crashed Ray 2.60's driver here ("Tried to complete task that was not pending").
            for ref in rest:
                ray.cancel(ref)
            out["fail_raw"].append(time.time() - _failed_at(exc))
        ray.wait(refs, num_returns=len(refs), timeout=60)  # settled before the next round
        del refs, ready, rest
        print("ray bench: raw failure round done", file=sys.stderr, flush=True)
        group = RemoteGroup("bench failure")
        group.submit(fail_after, 0.5)
        for _ in range(m - 1):
            group.submit(hang)
        try:
            group.join()
        except Exception as exc:
            out["fail_hangguard"].append(time.time() - _failed_at(exc))
        print("ray bench: hangguard failure round done", file=sys.stderr, flush=True)

    k = params["abandoned"]
    # Killed workers still being confirmed hold their refs (a few seconds at most).
    _settle(lambda: _force.pending() == 0, 30.0)
    gc.collect()
    store_before, refs_before = _store_used(), _live_refs()
    for _ in range(k):
        group = RemoteGroup("bench abandoned")
        ray.get(group.submit(big))  # its 1 MiB result is in the store
        group.submit(hang)
        try:
            group.join(timeout=0.01)
        except JoinTimeout:
            pass
    del group
    out["store_before"], out["refs_before"] = store_before, refs_before
    # Ray frees an object some time after its last ref went (in batches): read the store
    # until it is back to its count before, for at most 15 s, and say how long it took.
    began = time.perf_counter()
    _settle(lambda: _store_used()[1] <= store_before[1], 15.0)
    out["store_settle_s"] = time.perf_counter() - began
    out["store_after"], out["refs_after"] = _store_used(), _live_refs()
    ray.shutdown()
    return out


def run(cfg: Config) -> list[Row]:
    """The three scenarios in one worker (one Ray start)."""
    n = (cfg.sizes or ((50,) if cfg.smoke else (FANOUT,)))[0]
    rounds = cfg.rounds_or(ROUNDS)
    failure = 10 if cfg.smoke else FAILURE
    abandoned = 5 if cfg.smoke else ABANDONED
    params = {"n": n, "rounds": rounds, "failure": failure, "abandoned": abandoned}
    result = run_worker("bench.ray_fanout:measure", params, provider="none", timeout=1200)
    before, after = result["store_before"], result["store_after"]
    ms = lambda values: [v * 1e3 for v in values]  # noqa: E731
    auth = f" (RAY_AUTH_MODE={result['auth_mode']})"
    raw = Row("ray", f"N={n:,}", "raw ray.get([f.remote(...)])" + auth, "ms", ms(result["raw"]))
    raw_ps = Row("ray", f"N={n:,}", "raw ray.get, ps watcher on", "ms", ms(result["raw_ps"]))
    fail_raw = Row(
        "ray",
        f"N={failure}",
        "failure -> exit: raw ray.wait + ray.cancel loop",
        "ms",
        ms(result["fail_raw"]),
    )
    return [
        raw,
        Row(
            "ray",
            f"N={n:,}",
            "RemoteGroup submit + join",
            "ms",
            ms(result["hangguard"]),
            baseline=raw,
            target=Target("ratio", 1.10),
        ),
        raw_ps,
        Row(
            "ray",
            f"N={n:,}",
            "RemoteGroup submit + join, ps watcher on (nodes reported after 0.5 s)",
            "ms",
            ms(result["hangguard_ps"]),
            baseline=raw_ps,
            target=Target("ratio", 1.10),
        ),
        fail_raw,
        Row(
            "ray",
            f"N={failure}",
            "failure -> exit: RemoteGroup.join (cancels, waits for the cancels)",
            "ms",
            ms(result["fail_hangguard"]),
            baseline=fail_raw,
        ),
        Row(
            "ray",
            f"K={abandoned}",
            "object store after K abandoned joins of a 1 MiB result + a hung task (before: "
            f"{before[0]:g} MiB, {before[1]} objects; after: {after[1]} objects, "
            f"{result['store_settle_s']:.1f} s after the last join)",
            "MiB",
            [after[0]],
            target=Target("abs", plus=before[0] + 1.0),
        ),
        Row(
            "ray",
            f"K={abandoned}",
            f"live ObjectRefs after K abandoned joins (before: {result['refs_before']})",
            "refs",
            [float(result["refs_after"])],
            target=Target("abs", plus=float(result["refs_before"])),
        ),
    ]
