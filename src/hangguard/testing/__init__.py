"""Testing support for users of hangguard (and for hangguard's own tests).

A fake clock for deterministic deadline arithmetic::

    from hangguard.testing import FakeClock, use_clock

    with use_clock(FakeClock()) as clock:
        with hangguard.deadline(10):
            clock.advance(4)
            assert hangguard.remaining() == 6
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._deadline import Clock, set_clock

__all__ = ["FakeClock", "use_clock"]


class FakeClock:
    """A clock that moves only when told to; pass it to :func:`use_clock`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.time += seconds


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Measure hangguard deadlines on ``clock`` inside the block; restores the previous one.

    Timers that enforce deadlines still run on the event loop's clock: this is for
    testing budget arithmetic, not for skipping real waits.
    """
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)
