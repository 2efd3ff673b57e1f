"""What every guarded op class carries, shared by the async (``_op``) and sync (``_op_sync``) sides.

A leaf of the op machinery: the spec the decorator stores on the class, how the class's
own methods are found behind the guarded wrappers, and how a submitted function is named.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._task_info import fn_name

__all__ = [
    "FALLBACK_ATTR",
    "ORIGINAL_ATTR",
    "SPEC_ATTR",
    "OpSpec",
    "find_original",
    "submit_label",
    "spec_of",
    "op_task_list",
]

SPEC_ATTR: Final = "__hangguard_op__"
# On every function this module installs on a class: what it replaced (None: nothing).
ORIGINAL_ATTR: Final = "__hangguard_original__"
# On the mixin's own submit/join: stand-ins that a class's real methods take precedence over.
FALLBACK_ATTR: Final = "__hangguard_fallback__"


@dataclass(frozen=True, slots=True)
class OpSpec:
    """What the decorator was given; ``None`` means "derive at call time"."""

    name: str | None
    budget: float | None

    def op_name(self, op: object) -> str:
        return self.name or type(op).__name__


def spec_of(op: object) -> OpSpec:
    spec = getattr(type(op), SPEC_ATTR, None)
    return spec if isinstance(spec, OpSpec) else OpSpec(None, None)


def submit_label(fn: object) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is not None and isinstance(getattr(type(owner), SPEC_ATTR, None), OpSpec):
        return spec_of(owner).op_name(owner)  # a guarded op's bound entry point
    if isinstance(fn, functools.partial):
        return submit_label(fn.func)
    return fn_name(fn)  # an undecorated op's entry point is named after its class too


def op_task_list(op: object) -> list[Any] | None:
    tasks = getattr(op, "task_list", None)
    return tasks if isinstance(tasks, list) else None


def find_original(cls: type, attr: str) -> Callable[..., Any] | None:
    """The class's own ``attr`` behind any guarded wrapper or mixin stand-in, or ``None``."""
    for klass in cls.__mro__:
        fn = klass.__dict__.get(attr)
        if fn is None:
            continue
        if getattr(fn, FALLBACK_ATTR, False):
            continue  # the mixin's stand-in: a real one later in the MRO wins
        if hasattr(fn, ORIGINAL_ATTR):
            original: Callable[..., Any] | None = getattr(fn, ORIGINAL_ATTR)
            return original
        return fn  # type: ignore[no-any-return]
    return None
