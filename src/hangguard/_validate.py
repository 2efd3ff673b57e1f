"""Checks of arguments and names, written once: a whole number, a number, a callable's name.

A leaf: every module that takes a count, a ratio or a function uses these, so the wording
of the error and the rule that ``True`` is not a number stay the same everywhere.
"""

from __future__ import annotations

import functools
import types
from typing import Any, TypeGuard

__all__ = ["bound_object", "callable_name", "check_whole", "is_number"]


def is_number(value: object) -> TypeGuard[int | float]:
    """An ``int`` or ``float`` that is not a ``bool`` (``True`` is an ``int`` in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_whole(value: object, param: str, *, minimum: int = 1) -> int:
    """``value`` as a whole number ``>= minimum``; else an error naming ``param``::

    limit = check_whole(limit, "limit")
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value!r}")
    return value


def callable_name(fn: Any) -> str:
    """The name logs, spans and budgets use for ``fn``: its qualified name.

    A method bound to an object is named after the object's class, not the class that
    defines it: ``SearchOp().async_call`` is ``SearchOp.async_call``, even when the method
    comes from a base class. A ``functools.partial`` is named after the function it
    wraps; something with no name is named by its ``repr``.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    owner = bound_object(fn)
    if owner is not None:
        method = getattr(fn, "__name__", None)
        if isinstance(method, str):
            return f"{type(owner).__qualname__}.{method}"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


def bound_object(fn: Any) -> object | None:
    """The object a method is bound to (not a class: a classmethod is named as usual)."""
    if not isinstance(fn, types.MethodType):
        return None
    owner = fn.__self__
    return None if isinstance(owner, type) else owner
