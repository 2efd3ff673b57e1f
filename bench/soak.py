"""``python -m bench soak``: run the join property test's scenarios many times.

The scenario generator and the invariant checker are tests/group_scenarios.py, the same
the hypothesis property test uses (so this runs from a repo checkout). Each scenario runs
untraced; with ``--traced`` also traced, and the two outcomes are compared. It prints
``N scenarios, F failures``, the failures by invariant and by known open defect, and the
first failing scenarios of each invariant shrunk to a minimal description. Exits 1 when
any scenario failed.
"""

from __future__ import annotations

import collections
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parent.parent / "tests"


def _scenarios() -> Any:
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    import group_scenarios

    return group_scenarios


def run_soak(n: int, *, traced: bool, seed: int, show: int, shrink: bool) -> int:
    gs = _scenarios()
    log = logging.getLogger("hangguard")
    log.propagate = False  # every failing task logs a traceback: thousands of them
    rng = random.Random(seed)
    by_invariant: collections.Counter[str] = collections.Counter()
    by_defect: collections.Counter[str] = collections.Counter()
    first: dict[str, tuple[Any, str]] = {}
    failed = unexplained = 0
    odd: list[tuple[Any, list[str]]] = []  # failing scenarios no known defect explains
    started = time.monotonic()
    mode = "untraced and traced" if traced else "untraced"
    print(f"soak: {n} scenarios, {mode}, seed {seed}", flush=True)
    for i in range(1, n + 1):
        scenario = gs.generate(gs.RandomChooser(rng))
        failures = gs.check_scenario(scenario, traced=traced)
        if failures:
            failed += 1
            defects = {gs.known_defect(scenario, f) for f in failures}
            if None in defects:
                unexplained += 1
                if len(odd) < show:
                    odd.append(
                        (scenario, [f for f in failures if gs.known_defect(scenario, f) is None])
                    )
            for f in failures:
                inv = gs.invariant_of(f)
                by_invariant[inv] += 1
                by_defect[gs.known_defect(scenario, f) or "(no known defect)"] += 1
                first.setdefault(inv, (scenario, f))
        if i % 1000 == 0:
            print(f"  {i}/{n}: {failed} failing [{time.monotonic() - started:.0f} s]", flush=True)
    elapsed = time.monotonic() - started
    print(f"{n} scenarios, {failed} failures ({mode}, {elapsed:.0f} s)")
    if not failed:
        return 0
    print(f"  {failed - unexplained} explained by known open defects, {unexplained} not")
    print("by invariant (failure count):")
    for inv, count in by_invariant.most_common():
        print(f"  {inv}: {count}")
    print("by known open defect:")
    for defect, count in by_defect.most_common():
        print(f"  {defect}: {count}  {gs.KNOWN_OPEN.get(defect, '')}")
    if odd:
        print("failures no known defect explains (first ones, as found):")
        for scenario, failures in odd:
            print(f"  {scenario.describe()}")
            for f in failures:
                print(f"      {f}")
    print("first failing scenarios" + (", shrunk:" if shrink else ":"))
    shown: set[str] = set()
    for inv, (scenario, failure) in first.items():
        base = inv.removesuffix("[traced]")
        if base in shown or len(shown) >= show:
            continue
        shown.add(base)
        if shrink:
            scenario = gs.shrink(scenario, inv, traced=traced)
            again = [f for f in gs.check_scenario(scenario, traced=traced)]
            failure = next((f for f in again if gs.invariant_of(f) == inv), failure)
        print(f"  {inv}: {scenario.describe()}")
        print(f"      {failure}")
    return 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser("soak", help="the join property scenarios, many times (default 10000)")
    p.add_argument("--n", type=int, default=10_000, help="scenarios to run (10000)")
    p.add_argument("--traced", action="store_true", help="also run each traced, and compare")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--show", type=int, default=12, help="failing invariants shown (12)")
    p.add_argument("--no-shrink", action="store_true", help="show failing scenarios as found")
