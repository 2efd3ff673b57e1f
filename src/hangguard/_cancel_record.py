"""The one way a cancellation is written into the trace.

Groups, threads, Ray tasks, ops and MCP calls all record a cancel the same way: the
reason and cause as span attributes (what sampling and search match), and a
``hangguard.cancelled`` event (its timestamp and, where known, where the work was stuck),
capped per group by ``HANGGUARD_CANCEL_EVENTS``. The reason is worked out here, from the
:class:`~hangguard.DeadlineCancel` a firing deadline sends (or its absence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from ._deadline import DeadlineCancel, current_deadline, deadline_cancel_of, remaining
from ._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_REASON,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    EVENT_CANCELLED,
)
from ._spans import safe_str

__all__ = ["CancelRecord", "EventCap"]


@dataclass(frozen=True, slots=True)
class CancelRecord:
    """Why some work was cancelled: ``reason`` (a ``CANCEL_*`` value) and its ``cause``.

    ::

        record = CancelRecord.of(deadline_cancel_of(exc), cause="awaiting task cancelled")
        record.write(span)
    """

    reason: str
    cause: str
    # Made once: one record is written on every task a group cancels at once.
    _attrs: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attrs = {ATTR_CANCEL_REASON: self.reason, ATTR_CANCEL_CAUSE: self.cause}
        object.__setattr__(self, "_attrs", attrs)

    @classmethod
    def of(
        cls, cancel: DeadlineCancel | None, *, reason: str = CANCEL_PARENT, cause: str = ""
    ) -> CancelRecord:
        """A deadline's cancel (named after it), else ``reason`` and ``cause``."""
        if cancel is not None:
            return cls(CANCEL_DEADLINE, cancel.name or "")
        return cls(reason, cause)

    @classmethod
    def of_cancelled(cls, exc: BaseException) -> CancelRecord:
        """A cancellation received by an op or a call: its message is the cause."""
        reason = CANCEL_DEADLINE if deadline_cancel_of(exc) is not None else CANCEL_PARENT
        return cls(reason, safe_str(exc))

    @classmethod
    def of_joiner(cls, exc: BaseException, otherwise: str) -> CancelRecord:
        """Why a joining task was cancelled: a deadline (its own, or one enforced in a
        parent task that has passed), else its parent, with ``otherwise`` as the cause."""
        cancel = deadline_cancel_of(exc)
        if cancel is not None:
            return cls(CANCEL_DEADLINE, cancel.name or "")
        current = current_deadline()
        if current is not None and remaining() <= 0:
            return cls(CANCEL_DEADLINE, current.binding().name or "")
        return cls(CANCEL_PARENT, otherwise)

    def attrs(self) -> dict[str, str]:
        """The span attributes (a new dict: the caller may add to it)."""
        return dict(self._attrs)

    def write(
        self,
        span: Span,
        *,
        cap: EventCap | None = None,
        on_span: bool = True,
        extra: Callable[[], Mapping[str, AttributeValue]] | None = None,
    ) -> None:
        """Put the record on ``span``: as attributes, and as the event if ``cap`` allows.

        ``extra`` (the stack, the thread) is asked for only when the event is written.
        """
        attrs = self._attrs
        if on_span:
            span.set_attributes(attrs)
        if cap is None or cap.take():
            span.add_event(EVENT_CANCELLED, {**attrs, **extra()} if extra is not None else attrs)


class EventCap:
    """How many ``hangguard.cancelled`` events a group may still write.

    The attributes are cheap and go on every span; an event (about 14 us with its
    timestamp) only on the first few, so cancelling 10,000 tasks stays cheap.
    """

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True
