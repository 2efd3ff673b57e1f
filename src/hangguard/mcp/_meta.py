"""The caller's remaining budget on the wire: the ``_meta`` key both sides read.

A leaf shared by the client (which writes it) and ``DeadlineMiddleware`` (which reads it),
so neither side imports the other.
"""

from __future__ import annotations

import contextlib
from typing import Final

from .._validate import is_number

__all__ = ["TIMEOUT_META_KEY", "parse_timeout_meta"]

#: The ``_meta`` key carrying the caller's remaining budget in milliseconds.
TIMEOUT_META_KEY: Final = "hangguard/timeout-ms"


def parse_timeout_meta(meta: object) -> float | None:
    """The budget in seconds a request's ``_meta`` asks for, or ``None`` when it sets none.

    Raises ``ValueError`` naming the key when the value is not a non-negative number.
    """
    if not isinstance(meta, dict) or TIMEOUT_META_KEY not in meta:
        return None
    raw = meta[TIMEOUT_META_KEY]
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            raw = float(raw)
    if not is_number(raw) or not raw >= 0:
        raise ValueError(
            f"_meta[{TIMEOUT_META_KEY!r}] must be a non-negative number of milliseconds, "
            f"got {meta[TIMEOUT_META_KEY]!r}"
        )
    return float(raw) / 1000.0
