"""Server side of the deadline carried across the wire: ``DeadlineMiddleware``.

A hangguard client puts the time it has left, in relative milliseconds, in each request's
``_meta`` under ``hangguard/timeout-ms`` (like gRPC's ``grpc-timeout``: relative, so the two
clocks never need to agree). The middleware turns it back into a hangguard deadline around
the handler, so the server stops working when nobody waits for the answer any more, and
the tool's own nested calls inherit what is left.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, REQUEST_TIMEOUT

from ._deadline import check_timeout, deadline
from ._exceptions import DeadlineExceeded

__all__ = ["TIMEOUT_META_KEY", "DeadlineMiddleware", "parse_timeout_meta"]

logger = logging.getLogger("hangguard.mcp")

#: The ``_meta`` key carrying the caller's remaining budget in milliseconds.
TIMEOUT_META_KEY: Final = "hangguard/timeout-ms"

# A long-lived stream, not a request awaiting an answer: a budget would only cut it off.
_UNBOUNDED_METHODS: Final = frozenset({"subscriptions/listen"})


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
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw >= 0:
        raise ValueError(
            f"_meta[{TIMEOUT_META_KEY!r}] must be a non-negative number of milliseconds, "
            f"got {meta[TIMEOUT_META_KEY]!r}"
        )
    return float(raw) / 1000.0


class DeadlineMiddleware:
    """Enforce the caller's deadline (``_meta["hangguard/timeout-ms"]``) on the server.

    The handler runs under a hangguard deadline of ``min(client budget, max_timeout)``,
    so a client cannot ask for more than the server allows, and code inside the tool sees
    it through ``hangguard.remaining()`` and passes it on to its own MCP calls. When it
    fires, the handler is cancelled, ``hangguard.deadline_exceeded`` is recorded on the
    server span and the request is answered with JSON-RPC error ``-32001``::

        server = MCPServer("search", middleware=[hangguard.DeadlineMiddleware(max_timeout=60)])

    A request without the key is bounded by ``max_timeout`` alone (``None``: no bound).
    """

    __slots__ = ("_max_timeout",)

    def __init__(self, max_timeout: float | None = None) -> None:
        self._max_timeout = check_timeout(max_timeout, "max_timeout")

    @property
    def max_timeout(self) -> float:
        """The most any request may take on this server (``math.inf``: no cap)."""
        return self._max_timeout

    def __repr__(self) -> str:
        cap = None if math.isinf(self._max_timeout) else self._max_timeout
        return f"DeadlineMiddleware(max_timeout={cap!r})"

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None or ctx.method in _UNBOUNDED_METHODS:
            return await call_next(ctx)
        try:
            asked = parse_timeout_meta(ctx.meta)
        except ValueError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        budget = min(math.inf if asked is None else asked, self._max_timeout)
        if math.isinf(budget):
            return await call_next(ctx)
        target = ctx.params.get("name") if ctx.params else None
        name = f"{ctx.method} {target}" if isinstance(target, str) else ctx.method
        scope = deadline(budget, name=name)
        try:
            async with scope:
                return await call_next(ctx)
        except DeadlineExceeded as exc:
            if not scope.expired:
                raise  # a deadline of the handler's own, not the caller's
            # The caller has given up by now; the answer is for logs and for a peer
            # whose clock runs slow. The scope already put the event on the server span.
            logger.info("MCP request %s cancelled: %s", name, exc)
            raise MCPError(code=REQUEST_TIMEOUT, message=f"server-side {exc}") from exc
