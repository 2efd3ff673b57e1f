"""The exceptions hangguard raises.

The hierarchy::

    HangguardError
    ├── DeadlineExceeded        (also builtin TimeoutError)
    │   └── JoinTimeout         partial results + names of unfinished tasks
    ├── ThreadCancelled         a thread's group or awaiting task gave up on it
    ├── ConfigError             (also ValueError) names the env var / parameter
    └── McpError                names the server and the tool
        ├── McpConnectError     cannot reach the server or finish the handshake
        │   └── McpCircuitOpen  the server's circuit breaker is open: not even tried
        ├── McpCallError        a JSON-RPC error response, with ``.code``
        │   └── McpUnknownToolError  the server does not offer that tool (not sent)
        └── McpToolError        the tool answered ``isError`` (when asked to raise)

``DeadlineExceeded`` subclasses ``TimeoutError``, which is ``asyncio.TimeoutError``
on Python 3.11+, so code written as ``except asyncio.TimeoutError`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "HangguardError",
    "JoinTimeout",
    "McpCallError",
    "McpCircuitOpen",
    "McpConnectError",
    "McpError",
    "McpToolError",
    "ThreadCancelled",
    "McpUnknownToolError",
]


class HangguardError(Exception):
    """Base class of every error hangguard raises on its own account."""


def _fmt_budget(budget: float) -> str:
    return "no limit" if math.isinf(budget) else f"{budget:g}s"


class DeadlineExceeded(HangguardError, TimeoutError):
    """A deadline passed: the guarded work was cancelled.

    ``deadline_name`` and ``budget`` say which deadline fired, so that a nested
    call failing on its parent's budget is told apart from its own limit.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        deadline_name: str | None = None,
        budget: float = math.inf,
        detail: str = "",
    ) -> None:
        self.deadline_name = deadline_name
        self.budget = budget
        if message is None:
            label = repr(deadline_name) if deadline_name else "(unnamed)"
            message = f"deadline {label} exceeded (budget {_fmt_budget(budget)}){detail}"
        super().__init__(message)


_new_exception = DeadlineExceeded.__new__


def unfinished_task(message: str, deadline_name: str | None, budget: float) -> DeadlineExceeded:
    """``DeadlineExceeded(message, deadline_name=..., budget=...)``, made without the call.

    A join that gives up builds one per unfinished task (100,000 at once in a large
    group): the keyword call through the ``TimeoutError`` base costs about 0.8 us, this
    about 0.3 us. The exception is the same: its args, attributes, str and repr.
    """
    exc = _new_exception(DeadlineExceeded, message)
    exc.args = (message,)
    exc.deadline_name = deadline_name
    exc.budget = budget
    return exc


class JoinTimeout(DeadlineExceeded):
    """A task group's join ran out of time.

    Every unfinished task was cancelled. ``results`` holds one entry per submitted
    task, in submit order: the value of a task that finished, the exception of one
    that failed, and a ``DeadlineExceeded`` for one that did not finish (so the
    usual ``[r for r in results if not isinstance(r, Exception)]`` keeps working).
    ``pending`` names the tasks that did not finish. A task group's join makes
    ``results`` when they are first read, from what it saw when it gave up::

        except hangguard.JoinTimeout as exc:
            done = [r for r in exc.results if not isinstance(r, Exception)]
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        deadline_name: str | None = None,
        budget: float = math.inf,
        results: Sequence[object] = (),
        pending: Sequence[str] = (),
    ) -> None:
        self._results: list[object] | None = list(results)
        self._make_results: Callable[[], list[object]] | None = None
        self.pending = list(pending)
        super().__init__(message, deadline_name=deadline_name, budget=budget)

    @property
    def results(self) -> list[object]:
        """One entry per submitted task, in submit order (see the class docstring)."""
        made = self._results
        if made is None:
            make, self._make_results = self._make_results, None
            assert make is not None
            made = self._results = make()
        return made

    @results.setter
    def results(self, value: Sequence[object]) -> None:
        self._results, self._make_results = list(value), None

    def __reduce__(self) -> tuple[Any, ...]:
        # The results as made (a pickled or copied JoinTimeout carries no way to make them).
        state = dict(vars(self))
        state["_results"], state["_make_results"] = self.results, None
        return (type(self), self.args, state)


def lazy_join_timeout(
    message: str,
    *,
    deadline_name: str | None,
    budget: float,
    pending: list[str],
    make_results: Callable[[], list[object]],
) -> JoinTimeout:
    """A :class:`JoinTimeout` whose ``results`` are made when first read.

    A large group's join that gives up would otherwise make one ``DeadlineExceeded`` per
    unfinished task (10,000 at once) before it returns; made inside that window, they
    are enough to set off CPython's full garbage collection there. ``make_results`` must
    work from a snapshot: it runs later, when the tasks may have moved on.
    """
    exc = JoinTimeout(message, deadline_name=deadline_name, budget=budget, pending=pending)
    exc._results, exc._make_results = None, make_results
    return exc


class ThreadCancelled(HangguardError):
    """Raised by :func:`hangguard.checkpoint` in a thread whose work is no longer wanted.

    A thread cannot be killed: when its group fails or its awaiting task is cancelled,
    the thread is left running and this is raised at its next ``checkpoint()``, so a long
    loop can stop early. ``reason`` is the ``hangguard.cancel.reason`` value (for
    example ``sibling_failed``), ``cause`` names what caused it.
    """

    def __init__(self, message: str, *, reason: str = "", cause: str = "") -> None:
        self.reason = reason
        self.cause = cause
        super().__init__(message)


class ConfigError(HangguardError, ValueError):
    """A configuration value is invalid; ``name`` is the env var or parameter at fault."""

    def __init__(self, message: str, *, name: str, value: object = None) -> None:
        self.name = name
        self.value = value
        super().__init__(message)


class McpError(HangguardError):
    """An MCP interaction failed; ``server`` and ``tool`` say where."""

    def __init__(self, message: str, *, server: str = "", tool: str | None = None) -> None:
        self.server = server
        self.tool = tool
        super().__init__(message)


class McpConnectError(McpError):
    """The MCP server could not be reached, or the handshake did not complete."""


class McpCallError(McpError):
    """The server answered a request with a JSON-RPC error; ``code`` is its code."""

    def __init__(
        self, message: str, *, code: int, server: str = "", tool: str | None = None
    ) -> None:
        self.code = code
        super().__init__(message, server=server, tool=tool)


class McpToolError(McpError):
    """The tool ran and reported failure (``isError``); ``result`` is what it returned."""

    def __init__(
        self, message: str, *, result: object = None, server: str = "", tool: str | None = None
    ) -> None:
        self.result = result
        super().__init__(message, server=server, tool=tool)


class McpCircuitOpen(McpConnectError):
    """The server's circuit breaker is open: the call failed fast, nothing was sent.

    ``since`` is when it opened (``time.time()``), ``last_error`` the failure that
    opened it, ``retry_at`` when the next probe call may go through.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str = "",
        tool: str | None = None,
        since: float = 0.0,
        retry_at: float = 0.0,
        last_error: str = "",
    ) -> None:
        self.since = since
        self.retry_at = retry_at
        self.last_error = last_error
        super().__init__(message, server=server, tool=tool)


class McpUnknownToolError(McpCallError):
    """The server's tool list has no tool of that name; raised before anything is sent.

    ``offered`` is the server's tool names. The code is JSON-RPC ``-32602`` (invalid
    params), what servers of the mcp 2.x SDK answer for an unknown tool, so code that
    catches ``McpCallError`` sees one error whatever the server would have done.
    """

    def __init__(
        self,
        message: str,
        *,
        offered: Sequence[str] = (),
        server: str = "",
        tool: str | None = None,
    ) -> None:
        self.offered = list(offered)
        super().__init__(message, code=-32602, server=server, tool=tool)
