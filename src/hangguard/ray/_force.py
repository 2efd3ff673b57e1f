"""Confirming a forced cancel: the worker of a task that ignored its cancellation is killed,
and the group makes sure of it, off the join's path.

``ray.cancel(force=True)`` is a request: it can be lost (it reaches a task while Ray is
still cancelling it, or hands it to a worker) and then the worker runs on, holding its CPU,
long after the join ended on time. So each forced task is watched here, on one daemon
thread for the whole driver, with one ``ray.wait`` over all of them at a time: its ref
completing is Ray's confirmation that the task ended. A task not confirmed within
:data:`CONFIRM_WAIT` gets the forced cancel again, at most :data:`FORCE_TRIES` times in
all; a worker still alive after the last one is reported (a WARNING naming the task and
its node, an event on the task's span, its ``hangguard ps`` entry ``ignoring_cancel``)
and watched, without more cancels, until Ray says it ended.

The task's span stays open until then (at most ``FORCE_TRIES * CONFIRM_WAIT``), so that
the confirmation, or the report, is written on it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.trace import Span

from .. import _inflight
from .._semconv import (
    ATTR_RAY_FORCE_ATTEMPTS,
    ATTR_RAY_FORCE_CONFIRMED,
    ATTR_RAY_NODE_ID,
    ATTR_TASK_NAME,
    EVENT_RAY_WORKER_SURVIVED,
)
from . import _driver_inflight

__all__ = ["CONFIRM_WAIT", "FORCE_TRIES", "pending", "watch"]

logger = logging.getLogger("hangguard.ray")

#: How long Ray has, after each forced cancel, to report that the task ended (seconds).
CONFIRM_WAIT: Final = 2.0
#: Forced cancels sent to one task at most (the first included).
FORCE_TRIES: Final = 3
#: A worker that survived every forced cancel is looked at this often until it ends.
SURVIVOR_EVERY: Final = 5.0
#: The longest one ``ray.wait`` of the watcher blocks (it also picks up new tasks then).
_TICK: Final = 0.5


@dataclass(eq=False)
class _Forced:
    """One killed task that Ray has not yet confirmed ended."""

    name: str
    group: str
    ref: Any
    span: Span | None
    key: int  # its abandoned entry in the driver's in-flight registry
    due: float  # when, on time.monotonic, the next step (cancel again, or report) is taken
    attempts: int = 1
    survived: bool = field(default=False)


_lock = threading.Lock()
_watched: list[_Forced] = []
_thread: threading.Thread | None = None


def watch(name: str, group: str, ref: Any, span: Span | None, started: float) -> None:
    """The first ``ray.cancel(force=True)`` of ``ref`` was sent: confirm it (or report it)."""
    global _thread
    key = _driver_inflight.abandon(name, ref.task_id().hex(), span, started)
    item = _Forced(name, group, ref, span, key, time.monotonic() + CONFIRM_WAIT)
    with _lock:
        _watched.append(item)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="hangguard-ray-force", daemon=True)
            _thread.start()


def pending() -> int:
    """How many killed tasks are not yet confirmed ended (survivors included)."""
    with _lock:
        return len(_watched)


def _run() -> None:
    global _thread
    while True:
        with _lock:
            items = list(_watched)
            if not items:
                _thread = None
                return
        try:
            _step(items)
        except Exception:
            # Ray is gone (shut down, the driver disconnected): nobody can confirm now.
            logger.debug("confirming forced cancels stopped", exc_info=True)
            with _lock:
                _watched.clear()
                _thread = None
            for item in items:
                _end(item, confirmed=False)
            return


def _step(items: list[_Forced]) -> None:
    import ray

    now = time.monotonic()
    wait = max(0.0, min(_TICK, min(i.due for i in items) - now))
    refs = [i.ref for i in items]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait, fetch_local=False)
    done = {r.hex() for r in ready}
    now = time.monotonic()
    for item in items:
        if item.ref.hex() in done:
            with _lock:
                _watched.remove(item)
            if item.survived:
                logger.info(
                    "remote task %r of group %r: its worker ended after all", item.name, item.group
                )
            _end(item, confirmed=True)
        elif now >= item.due:
            _overdue(item, now)


def _overdue(item: _Forced, now: float) -> None:
    import ray

    if item.survived:
        item.due = now + SURVIVOR_EVERY
        return
    if item.attempts < FORCE_TRIES:
        item.attempts += 1
        item.due = now + CONFIRM_WAIT
        try:
            ray.cancel(item.ref, force=True, recursive=True)
        except Exception:
            logger.warning("ray.cancel(force=True) of %r failed", item.name, exc_info=True)
        return
    item.survived = True
    item.due = now + SURVIVOR_EVERY
    node = _driver_inflight.node_of(item.ref.task_id().hex())
    logger.warning(
        "remote task %r of group %r: its worker is still running %gs after %d forced "
        "cancels (node %s); it holds its resources until it ends",
        item.name,
        item.group,
        CONFIRM_WAIT * item.attempts,
        item.attempts,
        node or "unknown",
    )
    _driver_inflight.set_state(item.key, _inflight.IGNORING_CANCEL)
    span = item.span
    if span is not None:
        attrs: dict[str, Any] = {ATTR_TASK_NAME: item.name, ATTR_RAY_FORCE_ATTEMPTS: item.attempts}
        if node:
            attrs[ATTR_RAY_NODE_ID] = node
        span.add_event(EVENT_RAY_WORKER_SURVIVED, attrs)
    _end(item, confirmed=False, forget=False)


def _end(item: _Forced, *, confirmed: bool, forget: bool = True) -> None:
    """Write the outcome on the task's span and end it (once); drop its entry when it ended."""
    span, item.span = item.span, None
    if span is not None:
        span.set_attribute(ATTR_RAY_FORCE_CONFIRMED, confirmed)
        span.set_attribute(ATTR_RAY_FORCE_ATTEMPTS, item.attempts)
        span.end()
    if forget:
        _driver_inflight.ended(item.key)
