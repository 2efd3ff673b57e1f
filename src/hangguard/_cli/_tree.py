"""A trace as a tree in the terminal: the embedded default view, no collector needed.

It renders :class:`~hangguard.tracing._records.SpanRecord` objects (what the local exporter
keeps) as op -> group -> tasks -> tool calls, each line with its duration and status,
and under each span the events that explain it: cancellations with their reason, cause
and where the task was stuck, retries, deadlines that fired. A cancelled span is marked
by its ``hangguard.cancel.reason`` attribute, which every cancelled task carries; a group
records the event for only its first few::

    console.print(trace_tree(handle.local_spans(), trace_id=trace_id))
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from .._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_REASON,
    ATTR_DEADLINE_BUDGET_S,
    ATTR_DEADLINE_NAME,
    ATTR_ERROR_TYPE,
    ATTR_EXCEPTION_MESSAGE,
    ATTR_EXCEPTION_TYPE,
    ATTR_GROUP_ABANDONED,
    ATTR_GROUP_CANCEL_IGNORED,
    ATTR_GROUP_CANCELLED,
    ATTR_GROUP_FAILED,
    ATTR_GROUP_LIMIT,
    ATTR_GROUP_SERIAL,
    ATTR_GROUP_SIZE,
    ATTR_GROUP_TIMED_OUT,
    ATTR_LOOP_BLOCKED_S,
    ATTR_LOOP_STACK,
    ATTR_OWN_TIMEOUT_S,
    ATTR_RETRY_ATTEMPT,
    ATTR_RETRY_ATTEMPTS,
    ATTR_RETRY_REMAINING_S,
    ATTR_RETRY_SLEEP_S,
    ATTR_TASK_NAME,
    ATTR_TASK_STACK,
    ATTR_TIMEOUT_S,
    EVENT_CANCEL_IGNORED,
    EVENT_CANCELLED,
    EVENT_DEADLINE_EXCEEDED,
    EVENT_LOOP_BLOCKED,
    EVENT_RETRY,
    EVENT_RETRY_BUDGET_EXHAUSTED,
    EVENT_RETRY_BUDGET_REFUSED,
)
from .._validate import is_number
from ..tracing._records import AttrValue, SpanEventRecord, SpanRecord
from ._trace_snapshots import is_snapshot, missing_parent_line, short_frame, snapshot_line

__all__ = [
    "MCP_SDK_SCOPE",
    "STACK_LINES",
    "cancel_reason",
    "format_budget",
    "format_duration",
    "short_frame",
    "trace_tree",
    "tree_roots",
]

#: The instrumentation scope of the mcp SDK's own spans (each JSON-RPC send, each server
#: handler): real, but they bury the op's story, so the CLI leaves them out by default.
MCP_SDK_SCOPE = "mcp-python-sdk"

#: How many frames of a cancelled task's stack the tree shows (innermost first).
STACK_LINES = 6

# OpenTelemetry's own event for record_exception(); the span's status already says it.
_EXCEPTION_EVENT = "exception"


def format_duration(seconds: float) -> str:
    """``0.0123`` -> ``12ms``, ``1.5`` -> ``1.50s``, ``inf`` -> ``none``."""
    if math.isinf(seconds):
        return "none"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def format_budget(seconds: float) -> str:
    """A budget as given: ``3`` -> ``3s``, ``2.7812`` -> ``2.78s``, ``inf`` -> ``none``."""
    return "none" if math.isinf(seconds) else f"{seconds:.3g}s"


def tree_roots(spans: Iterable[SpanRecord]) -> list[SpanRecord]:
    """The spans that start a tree, in start order: those whose parent is not among ``spans``."""
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
    ids = {s.span_id for s in ordered}
    return [s for s in ordered if s.parent_span_id is None or s.parent_span_id not in ids]


def _children(spans: Sequence[SpanRecord]) -> Mapping[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        if span.parent_span_id is not None:
            out.setdefault(span.parent_span_id, []).append(span)
    return out


def _num(value: AttrValue | None) -> float | None:
    if not is_number(value):
        return None
    return float(value)


def _status(span: SpanRecord, *, brief: bool) -> Text:
    """``ok``, ``cancelled (reason)``, ``timed out`` or ``ERROR ...``; ``brief`` leaves the
    error's message to the child span that carries the same one."""
    attrs = span.attributes
    if attrs.get(ATTR_GROUP_TIMED_OUT) is True:
        return Text("timed out", style="bold yellow")
    if span.status == "ERROR":
        kind = str(attrs.get(ATTR_ERROR_TYPE, ""))
        detail = span.status_description or ""
        if brief:
            short = detail.partition(":")[0] if detail else kind.rpartition(".")[2]
            return Text(f"ERROR {short}".rstrip() + " (see below)", style="bold red")
        label = f"ERROR {detail or kind}".rstrip()
        if kind and detail and kind.rpartition(".")[2] not in detail:
            label += f" ({ATTR_ERROR_TYPE}={kind})"
        return Text(label, style="bold red")
    reason = cancel_reason(span)
    if reason is not None:
        return Text(f"cancelled ({reason})" if reason else "cancelled", style="bold yellow")
    return Text("ok", style="green")


def cancel_reason(span: SpanRecord) -> str | None:
    """Why ``span`` was cancelled (``""`` when nobody said), or ``None`` if it was not.

    The span's attribute, which every cancelled task and op carries; else its
    ``hangguard.cancelled`` event (an ``execute_tool`` span, or a trace from before the
    attribute).
    """
    reason = span.attributes.get(ATTR_CANCEL_REASON)
    if reason is not None:
        return str(reason)
    events = span.events_named(EVENT_CANCELLED)
    if events:
        return str(events[0].attributes.get(ATTR_CANCEL_REASON, ""))
    return None


def _details(span: SpanRecord) -> str:
    attrs = span.attributes
    bits: list[str] = []
    if span.kind in ("CLIENT", "SERVER"):
        bits.append(span.kind.lower())
    timeout = _num(attrs.get(ATTR_TIMEOUT_S))
    if timeout is not None:
        # The budget in force; the op's own beside it only when the enclosing deadline
        # cut it short (a 300s op inside a 3s one: "budget 2.7s, own 300s").
        own = _num(attrs.get(ATTR_OWN_TIMEOUT_S))
        beside = f", own {format_budget(own)}" if own is not None and own != timeout else ""
        bits.append(f"budget {format_budget(timeout)}{beside}")
    size = attrs.get(ATTR_GROUP_SIZE)
    if size is not None:
        bits.append(
            f"{size} tasks, {attrs.get(ATTR_GROUP_FAILED, 0)} failed, "
            f"{attrs.get(ATTR_GROUP_CANCELLED, 0)} cancelled"
        )
        ignored = attrs.get(ATTR_GROUP_CANCEL_IGNORED)
        if isinstance(ignored, int) and ignored:
            bits.append(f"{ignored} ignored cancellation")
        abandoned = attrs.get(ATTR_GROUP_ABANDONED)
        if isinstance(abandoned, int) and abandoned:
            bits.append(f"{abandoned} left running")
    if attrs.get(ATTR_GROUP_SERIAL) is True:
        bits.append("serial")
    elif attrs.get(ATTR_GROUP_LIMIT) is not None:
        bits.append(f"limit {attrs[ATTR_GROUP_LIMIT]}")
    return ", ".join(bits)


def _label(span: SpanRecord, *, brief: bool) -> Text:
    text = Text()
    text.append(span.name, style="bold")
    text.append(f"  {format_duration(span.duration_s)}  ", style="dim")
    text.append_text(_status(span, brief=brief))
    details = _details(span)
    if details:
        text.append(f"  [{details}]", style="dim")
    return text


def _offset(span: SpanRecord, event: SpanEventRecord) -> str:
    return f"+{format_duration(max(0, event.timestamp_ns - span.start_ns) / 1e9)}"


def _event_line(span: SpanRecord, event: SpanEventRecord) -> RenderableType | None:
    attrs = event.attributes
    when = Text(f"{_offset(span, event)} ", style="dim")
    if event.name == EVENT_CANCELLED:
        line = Text.assemble(
            when,
            (f"{EVENT_CANCELLED} ", "yellow"),
            f"reason={attrs.get(ATTR_CANCEL_REASON, '')} cause={attrs.get(ATTR_CANCEL_CAUSE, '')}",
        )
        stack = attrs.get(ATTR_TASK_STACK)
        if isinstance(stack, str) and stack:
            frames = [short_frame(f) for f in stack.splitlines()[:STACK_LINES]]
            lines = [Text(f"  stuck at {frames[0]}", style="yellow")]
            lines += [Text(f"           {f}", style="dim") for f in frames[1:]]
            return Group(line, *lines)
        return line
    if event.name == EVENT_RETRY:
        sleep = _num(attrs.get(ATTR_RETRY_SLEEP_S))
        tail = f"; next attempt in {format_duration(sleep)}" if sleep is not None else ""
        return Text.assemble(
            when,
            (f"{EVENT_RETRY} ", "cyan"),
            f"attempt {attrs.get(ATTR_RETRY_ATTEMPT, '?')}/{attrs.get(ATTR_RETRY_ATTEMPTS, '?')}"
            f" failed: {_exception(attrs)}{tail}",
        )
    if event.name == EVENT_RETRY_BUDGET_EXHAUSTED:
        left = _num(attrs.get(ATTR_RETRY_REMAINING_S))
        return Text.assemble(
            when,
            (f"{EVENT_RETRY_BUDGET_EXHAUSTED} ", "yellow"),
            f"no time for attempt {_next_attempt(attrs)}"
            + (f" ({format_duration(left)} left)" if left is not None else "")
            + f": {_exception(attrs)}",
        )
    if event.name == EVENT_RETRY_BUDGET_REFUSED:
        return Text.assemble(
            when,
            (f"{EVENT_RETRY_BUDGET_REFUSED} ", "yellow"),
            f"the retry budget refused attempt {_next_attempt(attrs)}: {_exception(attrs)}",
        )
    if event.name == EVENT_DEADLINE_EXCEEDED:
        budget = _num(attrs.get(ATTR_DEADLINE_BUDGET_S))
        return Text.assemble(
            when,
            (f"{EVENT_DEADLINE_EXCEEDED} ", "yellow"),
            f"{attrs.get(ATTR_DEADLINE_NAME, '')!r}"
            + (f" after {format_duration(budget)}" if budget is not None else ""),
        )
    if event.name == EVENT_CANCEL_IGNORED:
        names = attrs.get(ATTR_TASK_NAME, ())
        shown = ", ".join(map(str, names)) if isinstance(names, tuple) else str(names)
        return Text.assemble(
            when, (f"{EVENT_CANCEL_IGNORED} ", "red"), f"still running after grace: {shown}"
        )
    if event.name == EVENT_LOOP_BLOCKED:
        blocked = _num(attrs.get(ATTR_LOOP_BLOCKED_S))
        line = Text.assemble(
            when,
            (f"{EVENT_LOOP_BLOCKED} ", "red"),
            "the event loop ran nothing"
            + (f" for {format_duration(blocked)}" if blocked is not None else ""),
        )
        stack = attrs.get(ATTR_LOOP_STACK)
        if isinstance(stack, str) and stack:
            frames = [short_frame(f) for f in stack.splitlines()[:STACK_LINES]]
            lines = [Text(f"  blocked in {frames[0]}", style="red")]
            lines += [Text(f"             {f}", style="dim") for f in frames[1:]]
            return Group(line, *lines)
        return line
    if event.name == _EXCEPTION_EVENT and span.status == "ERROR":
        return None
    shown = " ".join(f"{k}={v}" for k, v in attrs.items())
    return Text.assemble(when, (event.name, "magenta"), f" {shown}" if shown else "")


def _next_attempt(attrs: Mapping[str, AttrValue]) -> str:
    attempt = attrs.get(ATTR_RETRY_ATTEMPT)
    return str(attempt + 1) if isinstance(attempt, int) else "?"


def _exception(attrs: Mapping[str, AttrValue]) -> str:
    kind = str(attrs.get(ATTR_EXCEPTION_TYPE, "?")).rpartition(".")[2]
    message = attrs.get(ATTR_EXCEPTION_MESSAGE)
    return f"{kind}: {message}" if message else kind


def _add(node: Tree, span: SpanRecord, children: Mapping[str, list[SpanRecord]]) -> None:
    kids = children.get(span.span_id, [])
    brief = span.status == "ERROR" and any(
        k.status == "ERROR" and k.status_description == span.status_description for k in kids
    )
    branch = node.add(_label(span, brief=brief))
    # Events and child spans in time order: a failed call, then the retry, then the next.
    items: list[tuple[int, int, SpanEventRecord | SpanRecord]] = [
        (e.timestamp_ns, 1, e) for e in span.events
    ]
    items += [(k.start_ns, 0, k) for k in kids]
    for _, _, item in sorted(items, key=lambda t: (t[0], t[1])):
        if isinstance(item, SpanRecord):
            if is_snapshot(item):  # a look at this span while it was open, not work
                branch.add(snapshot_line(item))
            else:
                _add(branch, item, children)
            continue
        line = _event_line(span, item)
        if line is not None:
            branch.add(line)


def _visible(
    spans: Sequence[SpanRecord], hide_scopes: Collection[str]
) -> tuple[list[SpanRecord], int]:
    """The spans not from ``hide_scopes``, each re-parented to its nearest shown ancestor."""
    by_id = {s.span_id: s for s in spans}
    hidden = {s.span_id for s in spans if s.scope in hide_scopes}
    shown: list[SpanRecord] = []
    for span in spans:
        if span.span_id in hidden:
            continue
        parent = span.parent_span_id
        while parent is not None and parent in hidden:
            parent = by_id[parent].parent_span_id
        shown.append(
            span if parent == span.parent_span_id else replace(span, parent_span_id=parent)
        )
    return shown, len(hidden)


def trace_tree(
    spans: Sequence[SpanRecord],
    *,
    trace_id: str | None = None,
    hide_scopes: Collection[str] = (),
) -> Tree:
    """A rich ``Tree`` of one trace (``trace_id``, default: the trace of the first span).

    Roots are the spans whose parent is not in the trace; those that name a parent
    (one still open, or lost with a killed process) are shown under a line standing
    for it. Under each span its events, children and live snapshots come in time
    order. Spans of the instrumentation scopes in ``hide_scopes`` (e.g. the mcp SDK's
    own transport spans) are left out, their children kept.
    """
    if trace_id is None and spans:
        trace_id = min(spans, key=lambda s: s.start_ns).trace_id
    mine, hidden = _visible([s for s in spans if s.trace_id == trace_id], hide_scopes)
    children = _children(mine)
    title = Text(f"trace {trace_id}", style="bold")
    if hidden:
        title.append(f"  ({hidden} spans of {', '.join(sorted(hide_scopes))} not shown)", "dim")
    top = Tree(title, guide_style="dim")
    # A span whose parent is not in the trace (still open, or its process was killed
    # before it ended) goes under one placeholder line for that parent, with its siblings.
    missing: dict[str, Tree] = {}
    for root in tree_roots(mine):
        parent = root.parent_span_id
        if parent is None:
            _add(top, root, children)
            continue
        if parent not in missing:
            missing[parent] = top.add(missing_parent_line(parent, children[parent]))
        if is_snapshot(root):
            missing[parent].add(snapshot_line(root))
        else:
            _add(missing[parent], root, children)
    return top
