"""Live snapshots: work still open after ``HANGGUARD_SNAPSHOT_AFTER`` is exported now.

A span is exported when it ends, and a process killed with SIGKILL ends none: without
this, a hang that a supervisor ends with ``kill -9`` leaves nothing in the collector. The
watcher thread (:mod:`hangguard._ps`) calls the ticker; for each in-flight *leaf* (the
innermost work, where the stack says where it is stuck) open longer than the threshold it
sends one short span, a child of the open span, named ``snapshot <name>``, carrying the
elapsed time, the budget left, the state and the stack; then flushes the provider (at most
:data:`FLUSH_BOUND` seconds) so that a kill right after still leaves it in the collector.

Why a span and not a log record: tail sampling and Jaeger's query API (by service, by trace
id) see spans only, and a span needs no logs pipeline; span *events* could not be sent
before the open span ends anyway. The same entry is sent again at most every threshold,
and the process sends at most :data:`PER_MINUTE` snapshots a minute.

Only the OpenTelemetry API is used: the tracer is hangguard's from the injected or
global provider, and nothing is sent when there is none.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from . import _deadline, _inflight, _spans
from ._semconv import (
    ATTR_SNAPSHOT_BUDGET_LEFT_S,
    ATTR_SNAPSHOT_ELAPSED_S,
    ATTR_SNAPSHOT_KIND,
    ATTR_SNAPSHOT_NAME,
    ATTR_SNAPSHOT_PATH,
    ATTR_SNAPSHOT_SEQ,
    ATTR_SNAPSHOT_STACK,
    ATTR_SNAPSHOT_STATE,
    SPAN_SNAPSHOT,
)

__all__ = ["FLUSH_BOUND", "PER_MINUTE", "Snapshotter", "format_stack", "ticker", "totals"]

#: At most this many snapshots per process per minute (the rest wait for the next minute).
PER_MINUTE: Final = 60
#: The longest a flush after a snapshot may hold the watcher thread.
FLUSH_BOUND: Final = 1.0
#: How often the watcher looks, at most (also bounded by a quarter of the threshold).
_MAX_TICK: Final = 1.0


#: Snapshots this process sent, and those the per-minute cap held back (``ps`` shows them).
totals: dict[str, int] = {"sent": 0, "capped": 0}


def format_stack(frames: tuple[_inflight.Frame, ...]) -> str:
    """One frame a line, innermost first: ``file:line in function: source``."""
    return "\n".join(f"{f.file}:{f.line} in {f.function}: {f.source}" for f in frames)


def _default_flush(seconds: float) -> None:
    from ._providers import tracer_provider

    provider = tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        flush(int(seconds * 1000))


class Snapshotter:
    """Decides which entries are due and sends their snapshots (on the watcher thread)."""

    def __init__(self, after: float, flush: Callable[[float], Any] | None = None) -> None:
        self.after = after
        self._flush = flush if flush is not None else _default_flush
        self._last: dict[int, float] = {}  # entry id -> when its last snapshot went out
        self._seq: dict[int, int] = {}
        self._sent: collections.deque[float] = collections.deque()

    def tick(self) -> float | None:
        """Send what is due; returns the seconds until the next look (``None``: never)."""
        if math.isinf(self.after):
            return None
        wait = min(_MAX_TICK, self.after / 4)
        tracer = _spans.get_tracer()
        if tracer is None:
            return wait
        records = _inflight.snapshot(stacks=False)
        by_id = {r.id: r for r in records}
        live = set(by_id)
        for gone in [k for k in self._last if k not in live]:
            del self._last[gone]
            self._seq.pop(gone, None)
        parents = {r.parent_id for r in records if r.parent_id is not None}
        now = _deadline.now()
        due = [
            r
            for r in records
            if r.id not in parents
            and r.trace_id
            and r.elapsed_s >= self.after
            and now - self._last.get(r.id, -math.inf) >= self.after
        ]
        if not due:
            return wait
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()
        room = PER_MINUTE - len(self._sent)
        if room < len(due):
            totals["capped"] += len(due) - max(0, room)
            due = due[: max(0, room)]
        if not due:
            return wait
        stacked = {r.id: r for r in _inflight.snapshot(stacks=True, stacks_for={r.id for r in due})}
        for r in due:
            record = stacked.get(r.id, r)
            self._send(tracer, record, by_id)
            self._last[r.id] = now
            self._sent.append(now)
        self._flush(FLUSH_BOUND)
        return wait

    def _send(
        self, tracer: trace.Tracer, r: _inflight.Record, by_id: dict[int, _inflight.Record]
    ) -> None:
        chain = _chain(r, by_id)
        parent = NonRecordingSpan(
            SpanContext(
                trace_id=int(r.trace_id, 16),
                span_id=int(r.span_id, 16),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
        seq = self._seq[r.id] = self._seq.get(r.id, 0) + 1
        attrs: dict[str, Any] = {
            ATTR_SNAPSHOT_KIND: r.kind,
            ATTR_SNAPSHOT_NAME: r.name,
            ATTR_SNAPSHOT_STATE: r.state,
            ATTR_SNAPSHOT_ELAPSED_S: round(r.elapsed_s, 3),
            ATTR_SNAPSHOT_SEQ: seq,
            ATTR_SNAPSHOT_PATH: " > ".join(f"{c.kind} {c.name}" for c in reversed(chain)),
            ATTR_SNAPSHOT_STACK: format_stack(r.stack),
        }
        # The budget that binds: the leaf's own, or the tightest of the work around it.
        budget = min(c.budget_left_s for c in chain)
        if not math.isinf(budget):
            attrs[ATTR_SNAPSHOT_BUDGET_LEFT_S] = round(budget, 3)
        with _spans.contained():
            span = tracer.start_span(
                SPAN_SNAPSHOT.format(r.name),
                context=trace.set_span_in_context(parent),
                attributes=attrs,
            )
            span.end()
            totals["sent"] += 1


def _chain(record: _inflight.Record, by_id: dict[int, _inflight.Record]) -> list[_inflight.Record]:
    # The leaf and the work around it, innermost first.
    chain: list[_inflight.Record] = []
    r: _inflight.Record | None = record
    while r is not None and len(chain) < 16:
        chain.append(r)
        r = by_id.get(r.parent_id) if r.parent_id is not None else None
    return chain


def ticker(after: float, flush: Callable[[float], Any] | None) -> Callable[[], float | None] | None:
    """The watcher's periodic job for this threshold (``None`` when snapshots are off)."""
    if math.isinf(after):
        return None
    return Snapshotter(after, flush).tick
