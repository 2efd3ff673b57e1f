"""The one margin of the real-clock unit tests.

A real-clock unit test claims that something *ends* (a deadline fires, a join returns, a
call fails over) instead of hanging. On a loaded 2-core machine a process can be stalled
for seconds, so the bound is the budget plus a wide margin (trio allows 10x), and the
thing it guards against must take far longer than that (it hangs forever, or waits out a
timeout of 30 s or more). How *fast* it ends is shown by bench/, never asserted here.
"""

from __future__ import annotations

#: Seconds of slack past a budget for real-clock assertions.
WIDE_MARGIN = 5.0
