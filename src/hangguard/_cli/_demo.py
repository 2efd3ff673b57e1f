"""``hangguard demo``: the user guide's scenario, run for real, and its trace as a tree.

Everything happens in this process and on 127.0.0.1: the chaos MCP server serves on a
free port in a thread, the guarded op fans its searches out to it over streamable HTTP,
and the spans are kept by a local exporter (and sent over OTLP as well when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), so no collector is needed to see the trace::

    $ hangguard demo              # results table + trace tree
    $ hangguard demo --json | jq '.searches[] | {query, outcome}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

import hangguard
import hangguard.mcp

from .. import _config
from .._config import ENV_JAEGER_UI
from .._exceptions import ConfigError
from ..tracing._records import SpanRecord
from ._config_cmd import DEFAULT_JAEGER_UI
from ._demo_ops import OP_NAME, Search, SearchOp, make_op, plan
from ._demo_report import (
    Outcome,
    Progress,
    events_json,
    op_span,
    outcomes,
    results_table,
    summary_line,
)
from ._jaeger import has_ui
from ._tree import MCP_SDK_SCOPE, format_budget, trace_tree

__all__ = ["DEFAULT_BUDGET", "Budgets", "run_demo"]

#: The op's budget when neither a flag nor the env gives one: the demo ends in seconds.
DEFAULT_BUDGET = 3.0
#: The loop watchdog's threshold when --block-loop is given.
LOOP_BLOCK_THRESHOLD = 0.1

_SERVICE_NAME = "hangguard-demo"
# The default budget is for the default six searches; more add this much each.
_BASE_TASKS = 6
_PER_EXTRA_TASK = 0.25


@dataclass(frozen=True, slots=True)
class Budgets:
    """The layered budgets of the run, and where each came from."""

    op: float
    op_source: str
    join: float
    join_source: str

    @classmethod
    def resolve(cls, args: argparse.Namespace) -> Budgets:
        """Flags, else the env (as the library reads it), else the demo's defaults.

        Raises :class:`ConfigError` naming a bad variable.
        """
        if args.budget is not None:
            op, op_source = args.budget, "--budget"
        elif OP_NAME in _config.budgets():
            op, op_source = _config.budgets()[OP_NAME], _config.ENV_BUDGETS
        elif _config.ENV_DEFAULT_BUDGET in os.environ and not math.isinf(_config.default_budget()):
            op, op_source = _config.default_budget(), _config.ENV_DEFAULT_BUDGET
        elif args.tasks > _BASE_TASKS:
            # Client and server share this process: each search beyond the first six
            # costs CPU here, so the default grows with the fan-out to keep its margin.
            op = DEFAULT_BUDGET + _PER_EXTRA_TASK * (args.tasks - _BASE_TASKS)
            op_source = f"the demo's default for {args.tasks} searches"
        else:
            op, op_source = DEFAULT_BUDGET, "the demo's default"
        if args.join_timeout is not None:
            join, join_source = args.join_timeout, "--join-timeout"
        elif not math.isinf(_config.join_timeout()):
            join, join_source = _config.join_timeout(), _config.ENV_JOIN_TIMEOUT
        else:
            join, join_source = op / 2, "half the op's budget"
        return cls(op, op_source, join, join_source)


class _ErrLogHandler(logging.Handler):
    """Logs on the stderr console (so they print above the live progress), one line each.

    Tracebacks only with ``--verbose``: the results table and the trace already say
    what failed; ``-v`` shows the library's full log, as an application would.
    """

    def __init__(self, console: Console, *, tracebacks: bool) -> None:
        super().__init__()
        self.console = console
        self.tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if self.tracebacks and record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            style = "red" if record.levelno >= logging.ERROR else "dim"
            self.console.print(
                Text(f"{record.levelname.lower()} [{record.name}] {message}", style=style)
            )
        except Exception:
            self.handleError(record)


@contextmanager
def _logging(err: Console, *, verbose: bool, serial: bool) -> Iterator[None]:
    handler = _ErrLogHandler(err, tracebacks=verbose)
    root = logging.getLogger()
    lib = logging.getLogger("hangguard")
    # A failure the op's join receives is logged by the reference op's join (on
    # hangguard.testing, as flowllm's own join logs it); the group logs only the rest.
    saved = (root.level, lib.level)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Serial mode's log of each task's start and end is the point of the debug mode.
    lib.setLevel(logging.INFO if verbose or serial else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        lib.setLevel(saved[1])


async def _run_op(
    url: str, searches: list[Search], budgets: Budgets, progress: Progress, block_loop: float
) -> tuple[list[Any] | None, BaseException | None]:
    op_cls = make_op(budget=budgets.op, join_timeout=budgets.join, block_loop=block_loop)
    # One client for the whole fan-out, connected before the op's budget starts: the
    # pattern to copy (a connect per search would spend each search's budget on it).
    client = hangguard.mcp.McpClient(url, name="search", raise_on_error=True)
    async with client:
        search_op = SearchOp(client, run_key=uuid.uuid4().hex[:8])
        op = op_cls(searches, search_op, progress.watch)
        try:
            return await op.async_call(), None
        except hangguard.DeadlineExceeded as exc:
            # The op's own budget ran out before the join timeout did: still the designed
            # degradation (nothing hung), but no results to show.
            return None, exc


#: How long the demo waits to learn whether the Jaeger of its link serves a UI.
_UI_PROBE_TIMEOUT = 1.0


def _jaeger_base(args: argparse.Namespace) -> str:
    base: str = args.jaeger_ui or os.environ.get(ENV_JAEGER_UI) or DEFAULT_JAEGER_UI
    return base.rstrip("/")


def _jaeger_link(args: argparse.Namespace, trace_id: str | None) -> str | None:
    return f"{_jaeger_base(args)}/trace/{trace_id}" if trace_id else None


def run_demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run the demo; returns 0 when the op degraded gracefully, 1 when the demo failed."""
    try:
        searches = plan(
            args.tasks, hang=args.hang, fail=args.fail, flaky=args.flaky, slow=args.slow
        )
        if args.serial:
            os.environ[_config.ENV_SERIAL] = "1"
        budgets = Budgets.resolve(args)
        serial = _config.serial()
        block_loop = float(args.block_loop or 0.0)
        if block_loop < 0 or math.isnan(block_loop):
            raise ValueError(f"--block-loop must be >= 0 seconds, got {args.block_loop!r}")
        tracing = hangguard.setup_tracing(
            None if os.environ.get("OTEL_SERVICE_NAME") else _SERVICE_NAME,
            metrics_enabled=False,
            # With --block-loop the watchdog is on (0.1 s), else as the env says.
            loop_block_threshold=LOOP_BLOCK_THRESHOLD if block_loop else None,
        )
    except (ValueError, ConfigError) as exc:
        err.print(Text(f"error: {exc}", style="red"))
        return 2
    except RuntimeError as exc:
        # Another tracer provider is installed already (e.g. by opentelemetry-instrument).
        err.print(Text(f"error: the demo cannot install its tracing: {exc}", style="red"))
        return 1

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from ..mcp._chaos._server import ChaosServer
    from ..tracing._local import LocalSpanExporter

    # The tree needs the spans even when they also go to a collector.
    local = LocalSpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(local))

    progress = Progress(len(searches))
    show_progress = err.is_terminal if args.progress is None else args.progress
    live = Live(progress, console=err, refresh_per_second=10, transient=True)
    started = time.monotonic()
    failure: BaseException | None = None
    results: list[Any] | None = None
    timed_out: BaseException | None = None
    with _logging(err, verbose=args.verbose, serial=serial):
        try:
            with ChaosServer() as chaos, live if show_progress else nullcontext():
                results, timed_out = asyncio.run(
                    _run_op(chaos.url, searches, budgets, progress, block_loop)
                )
        except Exception as exc:
            failure = exc
            logging.getLogger("hangguard.demo").error(
                "the demo failed: %s: %s", type(exc).__name__, exc, exc_info=exc
            )
        took = time.monotonic() - started
        flushed = tracing.shutdown()
    spans = local.spans()
    root = op_span(spans, OP_NAME)
    trace_id = root.trace_id if root is not None else None
    exported = tracing.settings.exporter == "otlp"
    link = _jaeger_link(args, trace_id) if exported else None
    items = outcomes(searches, results) if results is not None else []
    mine = [s for s in spans if s.trace_id == trace_id]
    if args.json:
        _print_json(out, budgets, serial, items, mine, trace_id, link, took, failure, timed_out)
    else:
        hide = () if args.all_spans else (MCP_SDK_SCOPE,)
        _print_text(out, budgets, serial, items, mine, trace_id, took, timed_out, hide)
    if exported:
        where = tracing.settings.traces_endpoint
        if flushed:
            err.print(f"trace exported to {where}; open it in Jaeger: {link}", soft_wrap=True)
            base = _jaeger_base(args)
            if trace_id is not None and has_ui(base, timeout=_UI_PROBE_TIMEOUT) is False:
                # A Jaeger built from source has the query API but no UI: the link opens
                # a placeholder page, so say how to see the trace instead.
                err.print(
                    f"note: {base} has no Jaeger UI (a build from source), so that link "
                    f"shows a placeholder; see the trace with: "
                    f"hangguard trace --jaeger {base} {trace_id}",
                    soft_wrap=True,
                )
        else:
            err.print(
                Text(f"warning: the trace could not be delivered to {where} in time", style="red"),
                soft_wrap=True,
            )
    return 1 if failure is not None else 0


def _print_text(
    out: Console,
    budgets: Budgets,
    serial: bool,
    items: list[Outcome],
    spans: list[SpanRecord],
    trace_id: str | None,
    took: float,
    timed_out: BaseException | None,
    hide_scopes: tuple[str, ...],
) -> None:
    out.print(
        Text.assemble(
            (f"{OP_NAME}", "bold"),
            f": budget {format_budget(budgets.op)} ({budgets.op_source}), join timeout "
            f"{format_budget(budgets.join)} ({budgets.join_source})"
            + (", serial (HANGGUARD_SERIAL=1)" if serial else ""),
        )
    )
    out.print()
    if items:
        out.print(results_table(items))
        out.print()
    if timed_out is not None:
        out.print(Text(f"the op ran out of its budget: {timed_out}", style="yellow"))
        out.print()
    out.print(summary_line(items, spans, took))
    out.print()
    if trace_id is not None:
        out.print(trace_tree(spans, trace_id=trace_id, hide_scopes=hide_scopes))


def _print_json(
    out: Console,
    budgets: Budgets,
    serial: bool,
    items: list[Outcome],
    spans: list[SpanRecord],
    trace_id: str | None,
    link: str | None,
    took: float,
    failure: BaseException | None,
    timed_out: BaseException | None,
) -> None:
    counts = {k: sum(1 for i in items if i.outcome == k) for k in ("ok", "failed", "cancelled")}
    doc = {
        "ok": failure is None,
        "error": None if failure is None else f"{type(failure).__name__}: {failure}",
        "op": OP_NAME,
        "budget_s": budgets.op,
        "budget_source": budgets.op_source,
        "join_timeout_s": budgets.join,
        "join_timeout_source": budgets.join_source,
        "serial": serial,
        "duration_s": round(took, 3),
        "op_timed_out": None if timed_out is None else str(timed_out),
        "results": [i.value for i in items if i.outcome == "ok"],
        "counts": counts,
        "searches": [i.to_json() for i in items],
        "trace_id": trace_id,
        "jaeger_url": link,
        "events": events_json(spans),
        "spans": [{k: v for k, v in s.to_json().items() if k != "resource"} for s in spans],
    }
    out.file.write(json.dumps(doc, indent=2) + "\n")
