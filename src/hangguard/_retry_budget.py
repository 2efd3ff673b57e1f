"""The retry budget: one allowance of retries for a whole call tree.

Retries at several layers multiply: three layers of three attempts hit a failing
dependency 27 times per request. A budget in the context caps the retries of every
retrying call beneath it (tasks created inside inherit it, being copies of the context)
at ``floor + ratio * calls``: a few retries always, then a share of the traffic.
"""

from __future__ import annotations

import math
from contextvars import ContextVar, Token
from types import TracebackType

from ._validate import check_whole, is_number

__all__ = ["RetryBudget", "budget_var", "retry_budget"]

_DEFAULT_RATIO = 0.2
_DEFAULT_FLOOR = 3


class RetryBudget:
    """Retries shared by a whole call tree, so that nested retries cannot multiply.

    It allows ``floor + ratio * calls`` retries in all, where ``calls`` counts the
    retrying calls started within it. Without one in the context, the outermost retrying
    call opens an implicit budget with the defaults for the calls nested in it, and is
    itself bounded by its ``attempts`` only. Get one from :func:`retry_budget`::

        with hangguard.retry_budget(floor=1) as budget:
            ...
        print(budget.retries, "of", budget.allowed)
    """

    __slots__ = ("_calls", "_retries", "_token", "floor", "ratio")

    def __init__(self, *, ratio: float = _DEFAULT_RATIO, floor: int = _DEFAULT_FLOOR) -> None:
        if not is_number(ratio):
            raise TypeError(f"ratio must be a number >= 0, got {ratio!r}")
        if not 0 <= ratio < math.inf:  # also false for NaN
            raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")
        check_whole(floor, "floor", minimum=0)
        self.ratio = float(ratio)
        self.floor = floor
        self._calls = 0
        self._retries = 0
        self._token: Token[RetryBudget | None] | None = None

    @classmethod
    def default(cls) -> RetryBudget:
        """A budget with the default ratio and floor (what a retry opens when none is set)."""
        # Skips the checks of __init__: this runs on every outermost retrying call.
        budget = cls.__new__(cls)
        budget.ratio = _DEFAULT_RATIO
        budget.floor = _DEFAULT_FLOOR
        budget._calls = 0
        budget._retries = 0
        budget._token = None
        return budget

    @property
    def calls(self) -> int:
        """Retrying calls started within the budget."""
        return self._calls

    @property
    def retries(self) -> int:
        """Retries the budget has granted."""
        return self._retries

    @property
    def allowed(self) -> float:
        """Retries allowed so far: ``floor + ratio * calls``."""
        return self.floor + self.ratio * self._calls

    def record_call(self) -> None:
        """Count one retrying call started under the budget (its first attempt)."""
        self._calls += 1

    def try_acquire(self) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is spent."""
        # The epsilon keeps 0.2 * 5 calls worth one whole retry despite float rounding.
        if self._retries + 1 <= self.allowed + 1e-9:
            self._retries += 1
            return True
        return False

    def refund(self) -> None:
        """Give back one retry taken with :meth:`try_acquire` that never started (the
        deadline passed during its backoff)."""
        if self._retries > 0:
            self._retries -= 1

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio:g}, floor={self.floor}, "
            f"calls={self._calls}, retries={self._retries})"
        )

    def __enter__(self) -> RetryBudget:
        if self._token is not None:
            raise RuntimeError("a retry budget cannot be entered twice at once")
        self._token = budget_var.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            budget_var.reset(self._token)
            self._token = None

    async def __aenter__(self) -> RetryBudget:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


#: The budget in force in this context (``None``: no retrying call is running).
budget_var: ContextVar[RetryBudget | None] = ContextVar("hangguard_retry_budget", default=None)


def retry_budget(ratio: float = _DEFAULT_RATIO, floor: int = _DEFAULT_FLOOR) -> RetryBudget:
    """A retry budget for the calls made inside the block (``with`` or ``async with``).

    Every retry within it, at any depth and in any task started inside, draws from the
    same ``floor + ratio * calls`` retries, so a failing dependency behind three layers
    of retries is not hit 27 times per request::

        async with hangguard.retry_budget(ratio=0.1, floor=2):
            await handle_request()
    """
    return RetryBudget(ratio=ratio, floor=floor)
