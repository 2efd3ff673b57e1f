"""Termination records: SIGTERM, or the exit past work still running, ends the open spans.

A supervisor that stops a process at its own timeout (Kubernetes: SIGTERM, then SIGKILL
after the grace period) would otherwise leave every hung span unexported. The handler
:func:`install` sets ends each registered entry's open span with
``hangguard.cancel.reason=terminated`` and the stack where it was, flushes within the
handle's ``shutdown_timeout``, then does what the previous handler would have done: it
calls a handler the application installed, or, for the default action, restores it and
sends SIGTERM again, so the process dies of SIGTERM as it would have (status 143 in a
shell, -15 for :mod:`subprocess`) with no Python code left to hang on the way out.

A Python signal handler runs in the main thread between bytecodes: it runs while the main
thread waits in ``time.sleep``, a socket read or a lock (they return EINTR to the
interpreter), not while a C call that never returns to it holds the main thread.

At exit (``atexit``, before the handle's own bounded shutdown), spans still open (work on
daemon threads the exit leaves behind) are ended the same way with reason
``abandoned_at_exit``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .. import _inflight, _spans
from .._semconv import (
    ATTR_CANCEL_REASON,
    ATTR_TERMINATED_STACK,
    CANCEL_ABANDONED_AT_EXIT,
    CANCEL_TERMINATED,
    EVENT_TERMINATED,
)
from .._snapshots import format_stack
from ._handle import TracingHandle

__all__ = ["end_open_spans", "install"]

logger = logging.getLogger("hangguard")


def _open() -> list[_inflight.Entry]:
    out: list[_inflight.Entry] = []
    for entry in _inflight.entries():
        out.append(entry)
        if entry.children is not None:
            try:
                out.extend(entry.children())
            except Exception:  # the owner ended while it was read
                pass
    return out


def end_open_spans(reason: str) -> int:
    """End every registered entry's open span with ``reason`` and its stack; returns how many."""
    ended = 0
    for entry in _open():
        span = entry.span
        if span is None or not span.is_recording():
            continue
        with _spans.contained():
            stack = ""
            if entry.where is not None:
                try:
                    stack = format_stack(entry.where())
                except Exception:  # the work ended while it was read
                    stack = ""
            attrs = {ATTR_CANCEL_REASON: reason, ATTR_TERMINATED_STACK: stack}
            span.set_attributes(attrs)
            span.add_event(EVENT_TERMINATED, attrs)
            span.end()
            ended += 1
    return ended


_Handler = Callable[[int, FrameType | None], Any]

# One handler and one exit hook per process, whatever the number of setup_tracing()
# calls: they act for the latest handle.
_handle: list[TracingHandle] = []
_exit_hooked = [False]


def _at_exit() -> None:
    if end_open_spans(CANCEL_ABANDONED_AT_EXIT):
        logger.warning("hangguard: work still running at exit; its spans are ended")


def _on_term(signum: int, frame: FrameType | None) -> Any:
    previous = _previous[0]
    end_open_spans(CANCEL_TERMINATED)
    handle = _handle[-1] if _handle else None
    if callable(previous):
        if handle is not None:
            handle.force_flush()  # bounded by shutdown_timeout; the application goes on
        return previous(signum, frame)
    if handle is not None:
        handle.shutdown()  # bounded by shutdown_timeout
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM, as without hangguard
    return None


_previous: list[Any] = [None]


def install(handle: TracingHandle, *, on_sigterm: bool) -> None:
    """Install the SIGTERM handler (when ``on_sigterm``) and the exit hook for ``handle``."""
    _handle[:] = [handle]
    if not _exit_hooked[0]:
        # Registered after the handle's own hook, so it runs before it (atexit is LIFO).
        atexit.register(_at_exit)
        _exit_hooked[0] = True
    if not on_sigterm:
        return
    if threading.current_thread() is not threading.main_thread():
        logger.warning(
            "hangguard: setup_tracing() ran off the main thread; no SIGTERM handler installed"
        )
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_term:
        return  # installed by an earlier setup_tracing(); it acts for this handle now
    if current is signal.SIG_IGN or current is None:
        # Ignored on purpose, or a handler set outside Python: not ours to wrap.
        logger.info("hangguard: SIGTERM is ignored or handled outside Python; left as it is")
        return
    _previous[0] = current
    signal.signal(signal.SIGTERM, _on_term)
