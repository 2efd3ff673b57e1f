"""When a timer fired late because the event loop was blocked: the note that says where.

A leaf shared by deadlines, task groups and the watchdog: the watchdogs register here per
loop, and :func:`late_note` asks the loop's watchdog (if any) where the loop was blocked.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Final

__all__ = ["LATE_NOTE_MIN_S", "late_note", "watchdogs"]

#: A timer this late (seconds) is reported as late even where no watchdog runs.
LATE_NOTE_MIN_S: Final = 0.1

#: The running watchdog of each loop (a ``LoopWatchdog``: ``threshold`` and ``blocked_in``).
watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def late_note(loop: asyncio.AbstractEventLoop, due: float) -> str:
    """``" (fired 1.9 s late: the loop was blocked in file:line in fn)"``, or ``""``.

    ``due`` is when a timer armed on ``loop`` should have fired (``loop.time()``, which
    is ``time.monotonic`` for the standard loops).
    """
    late = loop.time() - due
    dog = watchdogs.get(loop)
    minimum = dog.threshold if dog is not None else LATE_NOTE_MIN_S
    if late < minimum:
        return ""
    where = dog.blocked_in(time.monotonic() - late) if dog is not None else None
    if where is None:
        return f" (fired {late:.1f} s late: the event loop was busy or blocked)"
    return f" (fired {late:.1f} s late: the loop was blocked in {where})"
