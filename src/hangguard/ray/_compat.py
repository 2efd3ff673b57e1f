"""What hangguard needs to know about a ``@ray.remote`` function, in one place.

Ray exposes the wrapped function publicly (``remote_fn.remote.__wrapped__``, set by
``functools.wraps``) but not the options given to ``@ray.remote(...)``; those are read
from the remote function's ``_default_options``. This module is the only place that reads
anything private of Ray; if a Ray version drops the attribute, the options are taken as
empty and a warning says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["is_remote_function", "unwrap_remote_function"]

logger = logging.getLogger("hangguard")
_warned = False


def is_remote_function(fn: object) -> bool:
    from ray.remote_function import RemoteFunction

    return isinstance(fn, RemoteFunction)


def unwrap_remote_function(fn: Any) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The plain function behind ``@ray.remote(...)`` and the options it was given."""
    global _warned
    inner = getattr(getattr(fn, "remote", None), "__wrapped__", None)
    if not callable(inner):
        raise TypeError(f"cannot find the function behind the remote function {fn!r}")
    options = getattr(fn, "_default_options", None)
    if not isinstance(options, dict):
        if not _warned:
            _warned = True
            logger.warning(
                "this Ray version hides a remote function's options: the group submits "
                "%r without the options of its @ray.remote(...)",
                fn,
            )
        options = {}
    return inner, dict(options)
