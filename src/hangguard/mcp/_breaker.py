"""A circuit breaker per MCP server, shared by every client of that server in the process.

Closed, it counts consecutive transient failures (connect errors, 502/503/504, lost
connections, timeouts); at ``failures`` it opens. Open, every attempt fails at once with
:class:`~hangguard.McpCircuitOpen`, touching no network, for ``cooldown`` seconds. Then
it half-opens: one probe attempt goes through (the others still fail fast); its success
closes the breaker, its failure opens it for another cool-down. A reply of any kind
from the server (a result, a tool error, a JSON-RPC error) is a success. Each change of
state is a ``hangguard.mcp.breaker`` event on the current span and a count in
``hangguard.mcp.breaker.transitions``. Configured by ``HANGGUARD_MCP_BREAKER``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from opentelemetry import trace

from .. import _config
from .._deadline import now
from .._exceptions import McpCircuitOpen
from .._metrics import record_breaker_transition
from .._semconv import (
    ATTR_MCP_BREAKER_LAST_ERROR,
    ATTR_MCP_BREAKER_STATE,
    ATTR_MCP_SERVER,
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    EVENT_MCP_BREAKER,
)

__all__ = ["Breaker", "breaker_for", "reset_breakers"]


class Breaker:
    """The breaker of one server (see the module docstring). Thread-safe."""

    def __init__(self, server: str, failures: int, cooldown: float) -> None:
        self.server = server
        self.failures = failures
        self.cooldown = cooldown
        self.state = BREAKER_CLOSED
        self._lock = threading.Lock()
        self._count = 0
        self._opened_at = 0.0  # on hangguard's clock (a test's FakeClock moves it)
        self._opened_wall = 0.0  # time.time(), for messages
        self._last_error = ""
        self._probing = False

    def admit(self, tool: str) -> bool:
        """Let an attempt through, or raise ``McpCircuitOpen``; ``True`` for the probe."""
        with self._lock:
            if self.state == BREAKER_CLOSED:
                return False
            t = now()
            if self.state == BREAKER_OPEN and t - self._opened_at >= self.cooldown:
                self._move(BREAKER_HALF_OPEN)
            if self.state == BREAKER_HALF_OPEN and not self._probing:
                self._probing = True
                return True
            raise self._open_error(tool, t)

    def _open_error(self, tool: str, t: float) -> McpCircuitOpen:
        since = datetime.fromtimestamp(self._opened_wall, UTC).isoformat(timespec="seconds")
        wait = max(0.0, self._opened_at + self.cooldown - t)
        return McpCircuitOpen(
            f"MCP server {self.server}: circuit open since {since} after {self.failures} "
            f"failures in a row, last error: {self._last_error}; not calling {tool!r} "
            f"(next probe in {wait:.1f}s)",
            server=self.server,
            tool=tool,
            since=self._opened_wall,
            retry_at=self._opened_wall + self.cooldown,
            last_error=self._last_error,
        )

    def check(self, tool: str) -> None:
        """Raise ``McpCircuitOpen`` while open (for attempts admitted before it opened)."""
        if self.state == BREAKER_OPEN:
            with self._lock:
                if now() - self._opened_at < self.cooldown:
                    raise self._open_error(tool, now())

    def success(self, probe: bool) -> None:
        with self._lock:
            self._count = 0
            if probe:
                self._probing = False
            if self.state != BREAKER_CLOSED and (probe or self.state == BREAKER_HALF_OPEN):
                self._move(BREAKER_CLOSED)

    def failure(self, exc: BaseException, probe: bool) -> None:
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {exc}"
            if probe:
                self._probing = False
            if self.state == BREAKER_OPEN:
                return
            self._count += 1
            if probe or self._count >= self.failures:
                self._opened_at = now()
                self._opened_wall = time.time()
                self._move(BREAKER_OPEN)

    def release(self, probe: bool) -> None:
        """A probe that ended with no verdict (cancelled): let another one go."""
        if probe:
            with self._lock:
                self._probing = False

    def _move(self, state: str) -> None:
        self.state = state
        if state == BREAKER_CLOSED:
            self._count = 0
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                EVENT_MCP_BREAKER,
                {
                    ATTR_MCP_BREAKER_STATE: state,
                    ATTR_MCP_SERVER: self.server,
                    ATTR_MCP_BREAKER_LAST_ERROR: self._last_error,
                },
            )
        record_breaker_transition(state, self.server)


_breakers: dict[str, Breaker] = {}
_registry_lock = threading.Lock()


def breaker_for(server: str) -> Breaker | None:
    """The breaker of ``server`` (made on first use), or ``None`` when breakers are off.

    ``HANGGUARD_MCP_BREAKER`` is read at each call; a breaker keeps the settings it was
    made with.
    """
    settings = _config.mcp_breaker()
    if settings is None:
        return None
    with _registry_lock:
        breaker = _breakers.get(server)
        if breaker is None:
            breaker = _breakers[server] = Breaker(server, *settings)
        return breaker


def reset_breakers() -> None:
    """Forget every breaker (tests; a process that changed its settings)."""
    with _registry_lock:
        _breakers.clear()
