"""What the demo shows: live progress, each search's outcome, the JSON document.

The progress line is a rich renderable read by ``rich.live.Live`` from its refresh
thread; it only reads counters that the event loop's done-callbacks update, and the
deadline's remaining time::

    progress = Progress(total=6)
    with Live(progress, console=err):
        ...  # op runs; each submitted task is passed to progress.watch(task, search)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

import hangguard

from .._semconv import ATTR_OP_NAME, EVENT_CANCELLED, EVENT_RETRY
from .._spans import error_type
from ..tracing._records import SpanRecord
from ._demo_ops import Search
from ._tree import format_duration

__all__ = [
    "Outcome",
    "Progress",
    "events_json",
    "op_span",
    "outcomes",
    "results_table",
    "summary_line",
]


class Progress:
    """Searches done, failed, cancelled and running, and the op's budget left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self._deadline: hangguard.Deadline | None = None

    def watch(self, task: asyncio.Task[Any], search: Search) -> None:
        """Count ``task`` when it ends (called in the op, where its deadline is current)."""
        if self._deadline is None:
            self._deadline = hangguard.current_deadline()
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.cancelled += 1
        elif task.exception() is not None:
            self.failed += 1
        else:
            self.done += 1

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        running = self.total - self.done - self.failed - self.cancelled
        if self._deadline is None:
            left = "not started"  # the chaos server is still starting
        else:
            left = format_duration(self._deadline.remaining())
        yield Text.assemble(
            ("searches: ", "bold"),
            (f"{self.done} done", "green"),
            ", ",
            (f"{self.failed} failed", "red"),
            ", ",
            (f"{self.cancelled} cancelled", "yellow"),
            f", {running} running   ",
            ("budget left: ", "bold"),
            left,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one search ended: ``ok``, ``failed`` or ``cancelled``, with the value or error."""

    search: Search
    outcome: str
    value: str | None = None
    error_type: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.search.index,
            "query": self.search.query,
            "kind": self.search.kind,
            "outcome": self.outcome,
            "value": self.value,
            "error_type": self.error_type,
            "error": self.error,
        }


def outcomes(searches: Sequence[Search], results: Sequence[Any]) -> list[Outcome]:
    """Pair each search with its place in the op's results.

    A ``DeadlineExceeded`` in a place is what :class:`~hangguard.JoinTimeout` puts there
    for a task it cancelled; a ``CancelledError`` is a task someone else cancelled.
    """
    out = []
    for search, result in zip(searches, results, strict=True):
        if isinstance(result, (hangguard.DeadlineExceeded, asyncio.CancelledError)):
            out.append(
                Outcome(search, "cancelled", error_type=error_type(result), error=str(result))
            )
        elif isinstance(result, BaseException):
            out.append(Outcome(search, "failed", error_type=error_type(result), error=str(result)))
        else:
            out.append(Outcome(search, "ok", value=str(result)))
    return out


def results_table(items: Sequence[Outcome]) -> Table:
    """The partial results, one row a search."""
    table = Table(box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("query", no_wrap=True)
    table.add_column("chaos", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("result or error")
    style = {"ok": "green", "failed": "red", "cancelled": "yellow"}
    for item in items:
        detail = (
            item.value
            if item.outcome == "ok"
            else f"{(item.error_type or '').rpartition('.')[2]}: {item.error}"
        )
        table.add_row(
            str(item.search.index),
            item.search.query,
            item.search.describe(),
            Text(item.outcome, style=style[item.outcome]),
            detail,
        )
    return table


def op_span(spans: Sequence[SpanRecord], op_name: str) -> SpanRecord | None:
    """The op's own span (the root of the demo's trace)."""
    found = [s for s in spans if s.attributes.get(ATTR_OP_NAME) == op_name]
    return min(found, key=lambda s: s.start_ns) if found else None


def events_json(spans: Sequence[SpanRecord]) -> list[dict[str, Any]]:
    """Every span event of the trace, in time order, with the span it happened on."""
    rows = [(event.timestamp_ns, span, event) for span in spans for event in span.events]
    rows.sort(key=lambda r: r[0])
    return [
        {
            "name": event.name,
            "span": span.name,
            "span_id": span.span_id,
            "timestamp_ns": event.timestamp_ns,
            "attributes": event.to_json()["attributes"],
        }
        for _, span, event in rows
    ]


def summary_line(items: Sequence[Outcome], spans: Sequence[SpanRecord], took: float) -> Text:
    """One line: how many searches ended how, the retries and cancellations seen."""
    counts = {k: sum(1 for i in items if i.outcome == k) for k in ("ok", "failed", "cancelled")}
    retries = sum(len(s.events_named(EVENT_RETRY)) for s in spans)
    cancels = sum(len(s.events_named(EVENT_CANCELLED)) for s in spans)
    return Text.assemble(
        (f"{len(items)} searches in {format_duration(took)}: ", "bold"),
        (f"{counts['ok']} ok", "green"),
        ", ",
        (f"{counts['failed']} failed", "red"),
        ", ",
        (f"{counts['cancelled']} cancelled", "yellow"),
        f"; {retries} retr{'y' if retries == 1 else 'ies'}, "
        f"{cancels} cancellation event{'' if cancels == 1 else 's'} in the trace",
    )
