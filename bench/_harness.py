"""What every benchmark shares: rows and targets, the table, and the worker subprocesses.

A row is one variant at one size: its samples (one per round), the baseline it is
compared with, and the ratios of each round's pair. Ratios are taken pair by pair
(``variant[i] / baseline[i]``) so that drift of the machine during the run (another
process, CPU frequency) hits both sides of a pair alike; the table shows their median.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Stuck",
    "measure_pairs",
    "RESULT_PREFIX",
    "Config",
    "Provider",
    "Row",
    "Target",
    "WorkerError",
    "install_sdk",
    "machine_info",
    "print_rows",
    "quiet_hangguard_logging",
    "rss_bytes",
    "run_worker",
    "worker_env",
]

#: The directory holding the bench package: child processes import it from there.
ROOT = Path(__file__).resolve().parents[1]

#: The line a worker prints its JSON result after (anything before it is ignored).
RESULT_PREFIX = "BENCH-RESULT "

#: The global provider state a worker runs under: nothing installed; the SDK's tracer
#: provider with a BatchSpanProcessor feeding an exporter that drops everything; or that
#: plus the SDK's meter provider (as ``hangguard.setup_tracing`` installs by default).
Provider = Literal["none", "sdk", "sdk+metrics"]


@dataclass(frozen=True, slots=True)
class Config:
    """The sizes and rounds a benchmark runs at (smoke: small and one round)."""

    smoke: bool
    rounds: int | None = None  # None: each benchmark's own default
    sizes: tuple[int, ...] | None = None  # None: each benchmark's own default

    def rounds_or(self, default: int) -> int:
        if self.smoke:
            return 1
        return self.rounds if self.rounds is not None else default


@dataclass(frozen=True, slots=True)
class Target:
    """A benchmark's goal for one row.

    ``kind="ratio"``: median pair ratio <= ``factor``; ``"ratio_plus"``: median <=
    ``factor`` x baseline median + ``plus`` (same unit as the row); ``"abs"``: median <=
    ``plus``.
    """

    kind: Literal["ratio", "ratio_plus", "abs"]
    factor: float = 1.0
    plus: float = 0.0

    def text(self, unit: str) -> str:
        if self.kind == "ratio":
            return f"<= {self.factor:g}x"
        if self.kind == "ratio_plus":
            return f"<= {self.factor:g}x + {self.plus:g} {unit}"
        return f"<= {self.plus:g} {unit}"


@dataclass(slots=True)
class Row:
    """One variant at one size, with its samples and (optionally) its baseline's."""

    bench: str
    size: str
    variant: str
    unit: str
    samples: list[float]
    baseline: Row | None = None
    target: Target | None = None
    note: str = ""
    ratios: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.baseline is not None and not self.ratios:
            self.ratios = [
                a / b for a, b in zip(self.samples, self.baseline.samples, strict=False) if b > 0
            ]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def verdict(self) -> str:
        t = self.target
        if t is None:
            return ""
        if t.kind == "abs":
            return "pass" if self.median <= t.plus else "FAIL"
        if self.baseline is None or self.ratio is None:
            return "n/a"
        if t.kind == "ratio":
            return "pass" if self.ratio <= t.factor else "FAIL"
        return "pass" if self.median <= t.factor * self.baseline.median + t.plus else "FAIL"


def _num(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_rows(title: str, rows: Sequence[Row], *, out: Callable[[str], None] = print) -> None:
    """Print ``rows`` as a Markdown table (readable as is in a terminal)."""
    header = ["size", "variant", "median", "min", "max", "ratio", "target", "result"]
    lines = [header]
    for r in rows:
        ratio = r.ratio
        lines.append(
            [
                r.size,
                r.variant + (f" ({r.note})" if r.note else ""),
                f"{_num(r.median)} {r.unit}",
                _num(min(r.samples)) if r.samples else "-",
                _num(max(r.samples)) if r.samples else "-",
                "" if ratio is None else f"{ratio:.3f}x",
                "" if r.target is None else r.target.text(r.unit),
                r.verdict(),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out("")
    out(f"### {title}")
    out("")
    for n, line in enumerate(lines):
        out("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


class WorkerError(RuntimeError):
    """A benchmark worker subprocess failed or printed no result."""


def run_worker(
    target: str,
    params: Mapping[str, Any],
    *,
    provider: Provider,
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Run ``module:function(params)`` in a fresh interpreter under ``provider``.

    Returns the function's JSON-able result. Its stderr goes to ours, so a failing
    worker's traceback is shown where it happened.
    """
    argv = [sys.executable, "-m", "bench._worker", target, provider, json.dumps(dict(params))]
    proc = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=worker_env(env),
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            if proc.returncode != 0:
                break
            return json.loads(line[len(RESULT_PREFIX) :])
    raise WorkerError(
        f"benchmark worker {target} ({provider}) exited {proc.returncode} without a result; "
        f"stdout tail: {proc.stdout[-2000:]!r}"
    )


def worker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, with the bench package importable."""
    env = dict(os.environ)
    env.update(extra or {})
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"
    return env


class _DropAll:
    """A span exporter that takes every batch and keeps nothing (the issue's no-op)."""

    def export(self, spans: object) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def install_sdk(*, metrics: bool = False) -> None:
    """Install the SDK provider with defaults, a BatchSpanProcessor and a no-op exporter.

    With ``metrics``, also a meter provider whose reader collects only when asked, so
    that recording costs what it costs and exporting costs nothing.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    exporter: SpanExporter = type("DropAllExporter", (_DropAll, SpanExporter), {})()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if metrics:
        from opentelemetry import metrics as metrics_api
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics_api.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def quiet_hangguard_logging() -> None:
    """Send hangguard's log records to /dev/null: still formatted (a cost users pay), not shown.

    Failing and cancelled tasks are logged with their tracebacks; printed, they would
    bury the tables of the failure benchmarks.
    """
    log = logging.getLogger("hangguard")
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives with the process
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.propagate = False


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class Stuck:
    """N tasks that park forever (in an SDK span each when ``spans``); ``all_started`` is set
    once every one of them is running."""

    def __init__(self, n: int, spans: bool) -> None:
        self.n = n
        self.started = 0
        self.all_started = asyncio.Event()
        self.tracer: Any = None
        if spans:
            from opentelemetry import trace

            self.tracer = trace.get_tracer("bench")

    async def stuck(self) -> None:
        self.started += 1
        if self.started == self.n:
            self.all_started.set()
        await asyncio.get_running_loop().create_future()

    async def stuck_in_span(self) -> None:
        with self.tracer.start_as_current_span("task"):
            await self.stuck()


def measure_pairs(
    variants: Mapping[str, Callable[[int, bool], Awaitable[float]]], params: Mapping[str, Any]
) -> dict[str, list[float]]:
    """Worker side of a latency pair: each variant once per round, the order rotating.

    ``params`` carries ``n``, ``rounds`` and ``spans``; a warm-up round at ``min(n, 100)``
    comes first, and ``gc.collect()`` runs before every timed run.
    """
    n: int = params["n"]
    rounds: int = params["rounds"]
    spans: bool = params["spans"]
    names = list(variants)

    async def main() -> dict[str, list[float]]:
        for name in names:
            await variants[name](min(n, 100), spans)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                gc.collect()
                samples[name].append(await variants[name](n, spans))
        return samples

    return asyncio.run(main())


def machine_info() -> str:
    """One line naming the CPU, cores, Python and OpenTelemetry versions of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, opentelemetry-sdk {ver('opentelemetry-sdk')}, "
        f"mcp {ver('mcp')}, hangguard {ver('hangguard')}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )
