"""What an ``execute_tool`` span records of a call's content, when asked to.

Off by default: arguments and results may hold personal data. Opted in, values of
secret-looking keys are redacted at any depth and the JSON text is capped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from .._spans import safe_str

__all__ = ["captured", "redact"]

_SECRET_KEY: Final = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)
_REDACTED: Final = "[REDACTED]"


def redact(value: object) -> object:
    """A copy of ``value`` with the values of secret-looking keys replaced.

    Keys containing ``key``, ``token``, ``secret``, ``password`` or ``authorization``
    (any case) are redacted, at any depth of dicts and lists.
    """
    if isinstance(value, Mapping):
        return {
            k: _REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def captured(value: object, limit: int) -> str:
    """``value`` redacted, as compact JSON of at most ``limit`` characters (plus a note)."""
    text = json.dumps(redact(value), default=safe_str, ensure_ascii=False, separators=(",", ":"))
    if len(text) > limit:
        return f"{text[:limit]}...[{len(text) - limit} more characters]"
    return text
