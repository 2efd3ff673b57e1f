"""``hangguard ps PID [--json]``: the in-flight work of a running process, as a tree.

The target's watcher thread answers (see :mod:`hangguard._ps`); this prints its answer:
each entry with its elapsed time, budget left, state and trace id, and under each stuck
leaf the innermost frames of its stack with the source line.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

from .._ps import PsError, query

__all__ = ["add_parser", "format_entries", "run_ps"]


def add_parser(sub: Any) -> None:
    """Add ``ps`` to the subcommands ``sub`` (an argparse subparsers object)."""
    ps = sub.add_parser(
        "ps",
        help="show the work a running process has in flight, and where it is stuck",
        description=(
            "Ask a running process (its hangguard watcher, started by setup_tracing() or "
            "HANGGUARD_PS=1) for its in-flight ops, groups, tasks, threads and calls: "
            "elapsed, budget left, state, trace id, and the stack of each stuck leaf. "
            "Answers within 2 s even when its event loop is blocked."
        ),
    )
    ps.add_argument("pid", type=_pid, help="the process id")
    ps.add_argument("--json", action="store_true", help="print the JSON document")


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PID must be a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"PID must be > 0, got {text!r}")
    return value


def _seconds(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "none"
    if value < 0:
        return f"overdue {-value:.1f}s"
    return f"{value:.1f}s"


def _where(node: dict[str, Any] | None) -> str:
    # Work running in another process (a Ray task): its node and worker pid.
    if not node:
        return ""
    node_id = str(node.get("node_id", ""))[:12]
    return f"  on {node.get('ip') or '?'} node {node_id} pid {node.get('pid')}"


def format_entries(doc: dict[str, Any]) -> list[str]:
    """The tree of a ``ps`` document, one line per entry or frame."""
    entries: list[dict[str, Any]] = doc.get("entries", [])
    ids = {e["id"] for e in entries}
    kids: dict[int | None, list[dict[str, Any]]] = {}
    for e in entries:
        parent = e.get("parent_id")
        kids.setdefault(parent if parent in ids else None, []).append(e)
    lines = [f"process {doc.get('pid')} (Python {doc.get('python')}): {len(entries)} in flight"]

    def show(entry: dict[str, Any], depth: int) -> None:
        pad = "  " * depth
        trace = entry.get("trace_id") or "-"
        lines.append(
            f"{pad}{entry['kind']} {entry['name']}  [{entry['state']}]  "
            f"elapsed {_seconds(entry['elapsed_s'])}  budget left "
            f"{_seconds(entry['budget_left_s'])}  trace {trace}" + _where(entry.get("node"))
        )
        for frame in entry.get("stack", []):
            lines.append(f"{pad}    at {frame['function']} ({frame['file']}:{frame['line']})")
            if frame.get("source"):
                lines.append(f"{pad}       {frame['source']}")
        for kid in kids.get(entry["id"], []):
            show(kid, depth + 1)

    for root in kids.get(None, []):
        show(root, 1)
    return lines


def run_ps(out: Console, err: Console, pid: int, *, as_json: bool, timeout: float = 2.0) -> int:
    """Ask process ``pid`` and print its answer; 1 (with one line why) when it cannot."""
    try:
        doc = query(pid, timeout)
    except PsError as exc:
        err.print(f"hangguard ps: {exc}")
        return 1
    if as_json:
        out.print(json.dumps(doc, indent=2), soft_wrap=True)
        return 0
    for line in format_entries(doc):
        out.print(line, soft_wrap=True)
    return 0
