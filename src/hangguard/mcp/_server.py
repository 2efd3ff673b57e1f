"""Server side of the deadline carried across the wire: ``DeadlineMiddleware``.

A hangguard client puts the time it has left, in relative milliseconds, in each request's
``_meta`` under ``hangguard/timeout-ms`` (like gRPC's ``grpc-timeout``: relative, so the two
clocks never need to agree). The middleware turns it back into a hangguard deadline around
the handler, so the server stops working when nobody waits for the answer any more, and
the tool's own nested calls inherit what is left.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError as SdkMcpError
from mcp_types import INVALID_PARAMS, REQUEST_TIMEOUT

from .._deadline import check_timeout, deadline
from .._exceptions import DeadlineExceeded
from ._meta import parse_timeout_meta

__all__ = ["DeadlineMiddleware"]

logger = logging.getLogger("hangguard.mcp")

# A long-lived stream, not a request awaiting an answer: a budget would only cut it off.
_UNBOUNDED_METHODS: Final = frozenset({"subscriptions/listen"})


class DeadlineMiddleware:
    """Enforce the caller's deadline (``_meta["hangguard/timeout-ms"]``) on the server.

    The handler runs under a hangguard deadline of ``min(client budget, max_timeout)``,
    so a client cannot ask for more than the server allows, and code inside the tool sees
    it through ``hangguard.remaining()`` and passes it on to its own MCP calls. When it
    fires, the handler is cancelled, ``hangguard.deadline_exceeded`` is recorded on the
    server span and the request is answered with JSON-RPC error ``-32001``::

        server = MCPServer("search", middleware=[hangguard.mcp.DeadlineMiddleware(max_timeout=60)])

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
            raise SdkMcpError(code=INVALID_PARAMS, message=str(exc)) from None
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
            raise SdkMcpError(code=REQUEST_TIMEOUT, message=f"server-side {exc}") from exc
