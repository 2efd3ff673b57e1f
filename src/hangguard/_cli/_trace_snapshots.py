"""How ``hangguard trace`` shows live snapshots, and the open spans they belong to.

A live snapshot is a short span named ``snapshot <name>``, a child of a span still open
(see :mod:`hangguard._snapshots`). In the tree it is not a finished piece of work with a
duration and a status, so it gets a line of its own under its open span: which snapshot
it is, the state, the elapsed time, the budget left, and where the work was stuck (its
innermost frames, with the source line).

The open span itself may never reach the trace: a process killed with SIGKILL ends no
span, and a span is exported only when it ends. Its snapshots are then orphans; the tree
shows them under a placeholder line for the missing span, named from the snapshots
(they carry the open span's kind and name), rather than as unrelated roots::

    op BlockedOp  still open when last seen (never ended: running, or its process was killed)
    └── snapshot #1  running for 10.0s, budget left 110s
          stuck at app/hang.py:31 in blocked: time.sleep(600)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from rich.console import Group, RenderableType
from rich.text import Text

from .._semconv import (
    ATTR_SNAPSHOT_BUDGET_LEFT_S,
    ATTR_SNAPSHOT_ELAPSED_S,
    ATTR_SNAPSHOT_KIND,
    ATTR_SNAPSHOT_NAME,
    ATTR_SNAPSHOT_SEQ,
    ATTR_SNAPSHOT_STACK,
    ATTR_SNAPSHOT_STATE,
)
from .._validate import is_number
from ..tracing._records import SpanRecord

__all__ = [
    "SNAPSHOT_STACK_LINES",
    "is_snapshot",
    "missing_parent_line",
    "short_frame",
    "snapshot_line",
]

#: Frames of a snapshot's stack the tree shows, innermost first (the rest are in the span).
SNAPSHOT_STACK_LINES: Final = 3


def short_frame(line: str) -> str:
    """Trim a stack line's file path to its last two parts, so output is machine-free."""
    path, sep, rest = line.partition(":")
    if not sep:
        return line
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:]) + sep + rest


def is_snapshot(span: SpanRecord) -> bool:
    """Whether ``span`` is a live snapshot (it carries the snapshot's kind and name)."""
    return ATTR_SNAPSHOT_KIND in span.attributes and ATTR_SNAPSHOT_NAME in span.attributes


def _seconds(value: object) -> float | None:
    return float(value) if is_number(value) else None


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds:.0f}s"


def _budget(span: SpanRecord) -> str:
    left = _seconds(span.attributes.get(ATTR_SNAPSHOT_BUDGET_LEFT_S))
    if left is None or math.isinf(left):
        return "no deadline"
    if left < 0:
        return f"overdue by {_fmt(-left)}"
    return f"budget left {_fmt(left)}"


def snapshot_line(span: SpanRecord) -> RenderableType:
    """One snapshot: ``snapshot #2  ignoring_cancel for 20.0s, overdue by 19.8s`` and its
    innermost frames (``stuck at file:line in function: source``)."""
    attrs = span.attributes
    seq = attrs.get(ATTR_SNAPSHOT_SEQ)
    elapsed = _seconds(attrs.get(ATTR_SNAPSHOT_ELAPSED_S))
    head = Text.assemble(
        (f"snapshot #{seq}" if isinstance(seq, int) else "snapshot", "bold magenta"),
        "  ",
        (str(attrs.get(ATTR_SNAPSHOT_STATE, "?")), "magenta"),
        f" for {_fmt(elapsed)}" if elapsed is not None else "",
        f", {_budget(span)}",
    )
    stack = attrs.get(ATTR_SNAPSHOT_STACK)
    if not isinstance(stack, str) or not stack:
        return Group(head, Text("  (no stack: the work was between frames)", style="dim"))
    frames = [short_frame(f) for f in stack.splitlines()[:SNAPSHOT_STACK_LINES]]
    lines = [Text(f"  stuck at {frames[0]}", style="magenta")]
    lines += [Text(f"           {f}", style="dim") for f in frames[1:]]
    return Group(head, *lines)


def missing_parent_line(parent_span_id: str, orphans: Sequence[SpanRecord]) -> Text:
    """The line standing for a parent span that is not in the trace.

    With snapshots among ``orphans`` it is the open span they were taken of (its kind
    and name, from the latest one); else just the missing span's id.
    """
    snaps = [s for s in orphans if is_snapshot(s)]
    if not snaps:
        return Text(f"span {parent_span_id}  not in this trace", style="dim")
    last = max(snaps, key=lambda s: s.start_ns)
    attrs = last.attributes
    return Text.assemble(
        (f"{attrs[ATTR_SNAPSHOT_KIND]} {attrs[ATTR_SNAPSHOT_NAME]}", "bold"),
        ("  still open when last seen", "bold magenta"),
        (" (never ended: running, or its process was killed)", "dim"),
        (f"  span {parent_span_id}", "dim"),
    )
