"""A :class:`~hangguard.ray.RemoteGroup` in the driver's in-flight registry.

The group is one GROUP entry from its first submit to the end of its join; its children,
listed only when a reader asks (``hangguard ps`` of the driver, a live snapshot), are its
unfinished Ray tasks: running, or cancelling once the group has sent ``ray.cancel``.
A task whose worker the group killed after the grace (``ray.cancel(force=True)``) is no
longer the group's, but Ray has not said it has ended: it stays listed, as abandoned,
under one process-wide entry, until its ref completes.

Where each task runs comes from the worker's own report: Ray's public API says where an
object is once it exists, and ``ray.util.state`` needs the dashboard, which many
deployments leave out. While this driver's ``ps`` watcher runs, each task's meta carries
the name of a small named actor (no CPU) of this driver. A task still running after
:data:`REPORT_AFTER` seconds is reported to it by its worker's reporter thread (task id,
node id, IP, pid; one call it does not wait on): a hang is what a reader looks for, and a
short task then costs its worker only a dict insert and removal, not an actor call.
A reader asks the actor about the tasks it does not know yet, at most every
:data:`_ASK_EVERY` seconds and for at most :data:`_ASK_TIMEOUT`, so ``ps`` stays fast
when the actor is slow; an unknown node (a task younger than :data:`REPORT_AFTER`) is
shown as unknown.

The registry holds the group weakly: a group dropped without a join loses its entry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from typing import Any, Final

from .. import _deadline, _inflight, _ps

__all__ = [
    "NODES_KEY",
    "abandon",
    "book",
    "ended",
    "leave",
    "node_of",
    "register",
    "task_ended",
    "task_started",
    "set_state",
]

logger = logging.getLogger("hangguard.ray")

#: The meta key that carries the node book's actor name to the worker.
NODES_KEY: Final = "hangguard/nodes"
#: A task is reported to the book once it has run this long (seconds).
REPORT_AFTER: Final = 0.5
#: A reader asks the book about unknown tasks at most this often, for at most this long.
_ASK_EVERY: Final = 0.5
_ASK_TIMEOUT: Final = 0.5


class _NodeBook:
    """The actor (one per driver) where workers report where each task runs."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[str, str, int]] = {}

    def report(self, task_id: str, node_id: str, ip: str, pid: int) -> None:
        self._where[task_id] = (node_id, ip, pid)

    def where(self, task_ids: list[str]) -> dict[str, tuple[str, str, int]]:
        return {t: self._where[t] for t in task_ids if t in self._where}

    def forget(self, task_ids: list[str]) -> None:
        for t in task_ids:
            self._where.pop(t, None)


_lock = threading.Lock()
_book: Any = None
_book_name: str | None = None
_known: dict[str, _inflight.Node] = {}
_asked_at = -float("inf")


def book() -> str | None:
    """The name of this driver's node book, started at the first task while the ps watcher
    runs (``None`` otherwise: nobody can ask where a task runs, so workers report nothing)."""
    global _book, _book_name
    if _ps.watcher() is None:
        return None
    with _lock:
        if _book is None:
            import ray

            name = f"hangguard-nodes-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            try:
                _book = ray.remote(num_cpus=0)(_NodeBook).options(name=name).remote()
            except Exception:
                logger.warning("cannot start the node book of Ray tasks", exc_info=True)
                return None
            _book_name = name
        return _book_name


# Worker side: the tasks of this worker process not reported yet, by task id, with the
# book's name and their start; one daemon thread reports those that outlive REPORT_AFTER.
_pending: dict[str, tuple[str, float]] = {}
_reporter: threading.Thread | None = None
_handles: dict[str, Any] = {}


def task_started(book_name: str, task_id: str) -> None:
    """In the worker, as a task starts: report where it runs if it is still running later."""
    global _reporter
    _pending[task_id] = (book_name, time.monotonic())
    if _reporter is None:
        with _lock:
            if _reporter is None:
                _reporter = threading.Thread(
                    target=_report_loop, name="hangguard-ray-node-report", daemon=True
                )
                _reporter.start()


def task_ended(task_id: str) -> None:
    """In the worker, as a task ends: a task not reported yet needs no report."""
    _pending.pop(task_id, None)


def _report_loop() -> None:
    while True:
        time.sleep(REPORT_AFTER / 2)  # a poll period, not a wait for an outcome
        due = time.monotonic() - REPORT_AFTER
        for task_id, (name, started) in list(_pending.items()):
            if started <= due and _pending.pop(task_id, None) is not None:
                _report(name, task_id)


def _report(book_name: str, task_id: str) -> None:
    try:
        import ray

        handle = _handles.get(book_name)
        if handle is None:
            handle = _handles[book_name] = ray.get_actor(book_name)
        ctx = ray.get_runtime_context()
        ip = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        handle.report.remote(task_id, ctx.get_node_id(), ip, os.getpid())
    except Exception:  # the driver is gone or its book is: ps cannot ask anyway
        logger.debug("reporting the node of task %s failed", task_id, exc_info=True)


def _nodes(task_ids: list[str]) -> dict[str, _inflight.Node]:
    """Where those tasks run, as far as known; asks the book (bounded) for the rest."""
    global _asked_at
    missing = [t for t in task_ids if t not in _known]
    handle = _book
    now = time.monotonic()
    if missing and handle is not None and now - _asked_at >= _ASK_EVERY:
        _asked_at = now
        import ray

        try:
            found = ray.get(handle.where.remote(missing), timeout=_ASK_TIMEOUT)
        except Exception:  # slow or gone: unknown this time, asked again later
            found = {}
        for t, (node_id, ip, pid) in found.items():
            _known[t] = _inflight.Node(node_id=node_id, ip=ip, pid=pid)
    return {t: _known[t] for t in task_ids if t in _known}


def _task_entry(
    name: str, task_id: str, parent: _inflight.Entry | None, state: str, span: Any, start: float
) -> _inflight.Entry:
    context = span.get_span_context() if span is not None else None
    kid = _inflight.Entry(
        _inflight.RAY,
        name,
        parent=parent,
        trace_id=context.trace_id if context is not None else 0,
        span_id=context.span_id if context is not None else 0,
        start=start,
    )
    kid.state = state
    return kid


# Per group entry, the task ids a reader looked up (forgotten when the join ends).
_seen: dict[int, set[str]] = {}


def _children(ref: weakref.ref[Any], entry_box: list[_inflight.Entry]) -> list[_inflight.Entry]:
    group = ref()
    if group is None:
        return []
    rows: list[tuple[Any, str]] = []
    for slot in list(group._slots):
        task_ref = slot.ref
        if slot.done or task_ref is None:
            continue
        rows.append((slot, task_ref.task_id().hex()))
    _seen.setdefault(entry_box[0].id, set()).update(t for _, t in rows)
    nodes = _nodes([t for _, t in rows])
    out = []
    for slot, task_id in rows:
        state = _inflight.RUNNING if slot.cancel is None else _inflight.CANCELLING
        kid = _task_entry(slot.name, task_id, entry_box[0], state, slot.span, _started(slot))
        kid.node = nodes.get(task_id)
        out.append(kid)
    return out


def _started(slot: Any) -> float:
    # The slot's start is on time.monotonic; the registry's on hangguard's clock.
    started: float = slot.started
    return _deadline.now() - max(0.0, time.monotonic() - started)


def register(group: Any) -> _inflight.Entry:
    """The group's entry (at its first submit); dropped with :func:`leave` or with it."""
    box: list[_inflight.Entry] = []
    ref = weakref.ref(group)
    entry = _inflight.open_entry(
        _inflight.GROUP, group.name, span=group._span, children=lambda: _children(ref, box)
    )
    box.append(entry)
    weakref.finalize(group, _forget_entry, entry).atexit = False
    return _inflight.add(entry)


def _forget_entry(entry: _inflight.Entry) -> None:
    _inflight.discard(entry)
    for t in _seen.pop(entry.id, ()):
        _known.pop(t, None)


def leave(entry: _inflight.Entry | None) -> None:
    """The join has ended: drop the group's entry and what the book knows of its tasks."""
    if entry is None:
        return
    _inflight.discard(entry)
    ids = sorted(_seen.pop(entry.id, set()))
    for t in ids:
        _known.pop(t, None)
    handle = _book
    if handle is not None and ids:
        try:
            handle.forget.remote(ids)
        except Exception:
            logger.debug("the node book is gone", exc_info=True)


# Tasks whose worker was killed and whose end Ray has not confirmed yet (see _force).
_abandoned: dict[int, tuple[str, str, tuple[int, int], float, str]] = {}
_abandoned_entry: _inflight.Entry | None = None
_abandoned_ids = iter(range(1, 1 << 62))


def _abandoned_children() -> Iterable[_inflight.Entry]:
    with _lock:
        items = list(_abandoned.values())
    nodes = _nodes([t for _, t, _, _, _ in items])
    out = []
    for name, task_id, span_context, start, state in items:
        kid = _inflight.Entry(
            _inflight.RAY,
            name,
            parent=_abandoned_entry,
            trace_id=span_context[0],
            span_id=span_context[1],
            start=start,
        )
        kid.state = state
        kid.node = nodes.get(task_id)
        out.append(kid)
    return out


def abandon(name: str, task_id: str, span: Any, started: float) -> int:
    """The group killed this task's worker: list it as abandoned until :func:`ended`."""
    global _abandoned_entry
    context = span.get_span_context() if span is not None else None
    ids = (context.trace_id, context.span_id) if context is not None else (0, 0)
    key = next(_abandoned_ids)
    start = _deadline.now() - max(0.0, time.monotonic() - started)
    with _lock:
        _abandoned[key] = (name, task_id, ids, start, _inflight.ABANDONED)
        if _abandoned_entry is None:
            _abandoned_entry = _inflight.add(
                _inflight.Entry(
                    _inflight.GROUP, "abandoned ray tasks", children=_abandoned_children
                )
            )
    return key


def set_state(key: int, state: str) -> None:
    """A killed task's new state (``ignoring_cancel`` when its worker survived the kill)."""
    with _lock:
        row = _abandoned.get(key)
        if row is not None:
            _abandoned[key] = (*row[:4], state)


def ended(key: int) -> None:
    """Ray confirmed that the killed task ended: it leaves ``ps``."""
    global _abandoned_entry
    with _lock:
        _abandoned.pop(key, None)
        if not _abandoned and _abandoned_entry is not None:
            _inflight.discard(_abandoned_entry)
            _abandoned_entry = None


def node_of(task_id: str) -> str:
    """The node id where that task runs, if a worker reported it (``""`` otherwise)."""
    node = _nodes([task_id]).get(task_id)
    return node.node_id if node is not None else ""
