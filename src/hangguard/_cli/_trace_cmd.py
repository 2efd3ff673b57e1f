"""``hangguard trace FILE``: a span file written by ``HANGGUARD_TRACE_FILE``, as a tree.

An application traced with no collector (``setup_tracing()`` with no OTLP endpoint and
``HANGGUARD_TRACE_FILE=trace.jsonl``) leaves its spans in that file; this shows one trace
of it the way ``hangguard demo`` shows its own::

    $ HANGGUARD_TRACE_FILE=trace.jsonl python my_app.py
    $ hangguard trace trace.jsonl            # the most recent trace
    $ hangguard trace trace.jsonl --list     # every trace: id, root span, start, spans
    $ hangguard trace trace.jsonl --trace-id 4bf9   # a unique prefix is enough

A last line cut short (the process was killed mid-write) is skipped with a warning.

``--jaeger URL`` reads the same tree from Jaeger's query API instead of a file, e.g. from a
Jaeger built without its UI::

    $ hangguard trace --jaeger http://localhost:16686 4bf92f3577b34da6a3ce929d0e0e4736
    $ hangguard trace --jaeger http://localhost:16686 --service my-app        # its latest
    $ hangguard trace --jaeger http://localhost:16686 --service my-app --list --last 50
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..tracing._records import SpanRecord, read_span_file
from ._jaeger import JaegerError, trace_by_id, traces_of_service
from ._tree import format_duration, trace_tree, tree_roots

__all__ = ["show_jaeger_trace", "show_trace_file"]


def _traces(spans: Sequence[SpanRecord]) -> dict[str, list[SpanRecord]]:
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    # Oldest first, by each trace's earliest span.
    return dict(sorted(by_trace.items(), key=lambda kv: min(s.start_ns for s in kv[1])))


def show_trace_file(
    out: Console,
    err: Console,
    path: str,
    *,
    trace_id: str | None,
    list_only: bool,
    hide_scopes: Sequence[str],
    as_json: bool,
) -> int:
    """Print one trace of ``path`` (default: the most recent) or the list of its traces.

    Returns 2 when the file cannot be read or the trace is not in it, else 0.
    """
    try:
        spans = read_span_file(path)
    except (OSError, ValueError) as exc:
        err.print(Text(f"error: cannot read spans from {path}: {exc}", style="red"))
        return 2
    return _show(
        out,
        err,
        spans,
        path,
        trace_id=trace_id,
        list_only=list_only,
        hide_scopes=hide_scopes,
        as_json=as_json,
    )


def show_jaeger_trace(
    out: Console,
    err: Console,
    base: str,
    *,
    trace_id: str | None,
    service: str | None,
    last: int,
    lookback_s: float,
    list_only: bool,
    hide_scopes: Sequence[str],
    as_json: bool,
    timeout: float,
) -> int:
    """Print a trace read from the Jaeger query API at ``base``: by id, or the latest (or,
    with ``list_only``, the list) of the last ``last`` traces of ``service``.

    Returns 2 when Jaeger cannot be read or has no such trace, else 0.
    """
    try:
        if service is None:
            if trace_id is None:
                err.print(Text("error: --jaeger needs a TRACE_ID or --service NAME", style="red"))
                return 2
            spans = trace_by_id(base, trace_id, timeout=timeout)
            if not spans:
                err.print(
                    Text(f"error: Jaeger at {base} has no trace {trace_id}", style="red"),
                    soft_wrap=True,
                )
                return 2
        else:
            spans = traces_of_service(
                base,
                service,
                limit=last,
                lookback=timedelta(seconds=lookback_s),
                timeout=timeout,
            )
    except JaegerError as exc:
        err.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
        return 2
    where = f"Jaeger at {base}" + (f" (service {service})" if service else "")
    return _show(
        out,
        err,
        spans,
        where,
        trace_id=trace_id,
        list_only=list_only,
        hide_scopes=hide_scopes,
        as_json=as_json,
    )


def _show(
    out: Console,
    err: Console,
    spans: Sequence[SpanRecord],
    where: str,
    *,
    trace_id: str | None,
    list_only: bool,
    hide_scopes: Sequence[str],
    as_json: bool,
) -> int:
    traces = _traces(spans)
    if not traces:
        err.print(f"{where} holds no spans")
        return 0
    if list_only:
        rows = []
        for tid, members in traces.items():
            roots = tree_roots(members)
            first = roots[0] if roots else members[0]
            end = max(s.end_ns for s in members)
            rows.append((tid, first.name, len(members), (end - first.start_ns) / 1e9))
        if as_json:
            docs = [{"trace_id": t, "root": r, "spans": n, "duration_s": d} for t, r, n, d in rows]
            out.file.write(json.dumps(docs, indent=2) + "\n")
            return 0
        table = Table(box=None, pad_edge=False)
        for column in ("trace id", "root span", "spans", "duration"):
            table.add_column(column, no_wrap=True)
        for tid, root, n, seconds in rows:
            table.add_row(tid, root, str(n), format_duration(seconds))
        out.print(table)
        return 0
    if trace_id is None:
        chosen = next(reversed(traces))
    else:
        # As git does with commits: the whole id, or any prefix only one trace has.
        wanted = trace_id.strip().lower()
        matches = [t for t in traces if t.startswith(wanted)] if wanted else []
        if len(matches) != 1:
            why = "is not in" if not matches else f"matches {len(matches)} traces in"
            err.print(Text(f"error: trace {trace_id} {why} {where} (see --list)", style="red"))
            return 2
        chosen = matches[0]
    if as_json:
        doc = [{k: v for k, v in s.to_json().items() if k != "resource"} for s in traces[chosen]]
        out.file.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out.print(trace_tree(traces[chosen], trace_id=chosen, hide_scopes=hide_scopes))
    return 0
