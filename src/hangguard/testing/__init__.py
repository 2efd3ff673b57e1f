"""Testing support for users of hangguard (and for hangguard's own tests).

A reference op base class with flowllm 0.2's ``BaseAsyncOp`` shape
(:class:`BaseAsyncOp`), for examples and for tests of decorated ops.

A fake clock for deterministic deadline arithmetic::

    from hangguard.testing import FakeClock, use_clock

    with use_clock(FakeClock()) as clock:
        with hangguard.deadline(10):
            clock.advance(4)
            assert hangguard.remaining() == 6

A switch that makes retries wait zero seconds between attempts::

    from hangguard.testing import disable_backoff

    disable_backoff()  # for the whole session, e.g. in conftest.py
    with disable_backoff():  # or for a block; the previous state comes back after
        await flaky_call()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType

from .. import _deadline, _retry
from .._reference_op import BaseAsyncOp, OpContext

__all__ = ["BaseAsyncOp", "FakeClock", "OpContext", "disable_backoff", "use_clock"]


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
def use_clock(clock: _deadline.Clock) -> Iterator[_deadline.Clock]:
    """Measure hangguard deadlines on ``clock`` inside the block; restores the previous one.

    Timers that enforce deadlines still run on the event loop's clock: this is for
    testing budget arithmetic, not for skipping real waits.
    """
    previous = _deadline.set_clock(clock)
    try:
        yield clock
    finally:
        _deadline.set_clock(previous)


class _RestoreBackoff(AbstractContextManager[None]):
    __slots__ = ("_previous",)

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _retry.set_backoff_enabled(self._previous)


def disable_backoff() -> AbstractContextManager[None]:
    """Make hangguard retries wait zero seconds between attempts, starting now.

    Attempts, deadlines and retry budgets still apply; only the sleeping goes, so tests
    of retrying code run fast. Used as a context manager, it restores the previous state
    on exit; called as a plain function, it stays in force::

        @pytest.fixture(autouse=True)
        def _no_backoff() -> Iterator[None]:
            with disable_backoff():
                yield
    """
    return _RestoreBackoff(_retry.set_backoff_enabled(False))


for _name in ("BaseAsyncOp", "OpContext"):
    globals()[_name].__module__ = __name__
del _name
