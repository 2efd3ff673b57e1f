"""``python -m bench <subcommand>``: run the benchmarks and print their tables.

``smoke`` runs each benchmark once at a small size (CI runs it so the scripts never rot;
it exits 0 whatever the ratios), ``all`` runs everything at the issue's sizes, and each
benchmark has its own subcommand taking ``--sizes`` and ``--rounds``. ``soak`` is not a
benchmark: it runs the join property test's scenarios many times (``--n``, ``--traced``)
and exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from ._harness import Config, Row, machine_info, print_rows

# Subcommand -> (module, table title). Ordered as the table.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "fanout": ("bench.fanout", "Fan-out of N no-op tasks (per task)"),
    "failure": ("bench.failure", "One of N stuck tasks fails: from the failure to join's exit"),
    "timeout": ("bench.timeout", "Join timeout around N stuck tasks: overshoot past the deadline"),
    "cancel": (
        "bench.cancel",
        "N hanging tasks, join(timeout=0.5), grace 1 s: first submit to join's exit",
    ),
    "retry": ("bench.retry", "Retry decorator, success on the first attempt (per call)"),
    "mcp": ("bench.mcp_call", "Guarded MCP call_tool against the raw SDK client (per call)"),
    "http": (
        "bench.http_call",
        "Guarded httpx request against raw httpx on loopback (per request)",
    ),
    "breaker": ("bench.breaker", "Fan-out of 100 MCP calls to a dead server, breaker off and open"),
    "memory": ("bench.memory", "Traced tasks in batches: resident memory growth"),
    "shutdown": ("bench.shutdown", "Exit with the collector blackholed: wall time to exit"),
    "threads": (
        "bench.threads",
        "Thread fan-out of N no-op calls (per task); join around hung threads",
    ),
    "watchdog": ("bench.watchdog", "Loop watchdog: fan-out with it on vs off; detection latency"),
    "ray": ("bench.ray_fanout", "Ray: RemoteGroup against raw Ray (local 2-CPU Ray)"),
    "inflight": (
        "bench.inflight",
        "In-flight registry: fan-out overhead, snapshot cost, hangguard ps latency",
    ),
}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes numbers like 1000,10000, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be positive numbers, got {text!r}")
    return sizes


def _rounds(text: str) -> int:
    try:
        rounds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rounds takes a whole number, got {text!r}") from None
    if rounds < 1:
        raise argparse.ArgumentTypeError(f"--rounds must be >= 1, got {text!r}")
    return rounds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--output", metavar="FILE", help="also write the tables to FILE")
    sub.add_parser(
        "smoke", parents=[output], help="every benchmark at a small size, one round (for CI)"
    )
    sub.add_parser(
        "all", parents=[output], help="every benchmark at the issue's sizes (several minutes)"
    )
    for name, (_, title) in BENCHMARKS.items():
        p = sub.add_parser(name, parents=[output], help=title)
        p.add_argument("--sizes", type=_sizes, default=None, help="comma-separated sizes")
        p.add_argument("--rounds", type=_rounds, default=None, help="rounds per variant")
        p.add_argument("--smoke", action="store_true", help="small size, one round")
    from .profile import SCENARIOS

    p = sub.add_parser("profile", help="one scenario under pyinstrument (needs the bench extra)")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--provider", choices=("none", "sdk", "sdk+metrics"), default="none")
    p.add_argument("-n", type=_rounds, default=10_000, help="size of one run (10000)")
    p.add_argument("--rounds", type=_rounds, default=5, help="runs profiled (5)")
    p.add_argument("--all", action="store_true", help="show library frames too")
    from .soak import add_parser

    add_parser(sub)
    return parser


def _run(names: Sequence[str], cfg: Config, output: str | None) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    out(f"machine: {machine_info()}")
    started = time.perf_counter()
    for name in names:
        module, title = BENCHMARKS[name]
        began = time.perf_counter()
        rows: list[Row] = importlib.import_module(module).run(cfg)
        print_rows(f"{title} [{time.perf_counter() - began:.1f} s]", rows, out=out)
    out("")
    out(f"total: {time.perf_counter() - started:.1f} s")
    if output is not None:
        with open(output, "w") as f:
            f.write("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "soak":
        from .soak import run_soak

        if args.n < 1:
            raise SystemExit("--n must be >= 1")
        return run_soak(
            args.n, traced=args.traced, seed=args.seed, show=args.show, shrink=not args.no_shrink
        )
    if args.command == "profile":
        from .profile import run_profile

        print(run_profile(args.scenario, args.provider, args.n, args.rounds, args.all))
        return 0
    if args.command in ("smoke", "all"):
        _run(list(BENCHMARKS), Config(smoke=args.command == "smoke"), args.output)
    else:
        cfg = Config(smoke=args.smoke, rounds=args.rounds, sizes=args.sizes)
        _run([args.command], cfg, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
