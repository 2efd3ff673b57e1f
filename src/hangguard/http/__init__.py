"""Deadlines over plain HTTP: an httpx transport for clients, an ASGI middleware for servers.

Needs the ``http`` extra (``pip install 'hangguard[http]'``)::

    import httpx
    import hangguard
    from hangguard.http import AsyncDeadlineTransport

    client = httpx.AsyncClient(transport=AsyncDeadlineTransport())

    async def search() -> httpx.Response:
        async with hangguard.deadline(10):
            return await client.get("http://127.0.0.1:8000/search")

Each request is bounded by ``min(httpx's timeout, hangguard.remaining())``, retried within
that budget when it is safe to repeat, traced as an HTTP client span, and carries the time
left in ``Hangguard-Timeout-Ms``; a server wrapped in :class:`AsgiDeadlineMiddleware`
runs the handler under it and answers 504 when it runs out.
"""

try:
    import httpx as _httpx  # noqa: F401  (only to fail early with the install hint)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"hangguard.http needs the http extra: pip install 'hangguard[http]' ({exc})"
    ) from exc

from ._asgi import AsgiDeadlineMiddleware
from ._header import ENVOY_TIMEOUT_HEADER, TIMEOUT_HEADER
from ._transport import IDEMPOTENT_METHODS, AsyncDeadlineTransport, DeadlineTransport

__all__ = [
    "ENVOY_TIMEOUT_HEADER",
    "IDEMPOTENT_METHODS",
    "TIMEOUT_HEADER",
    "AsgiDeadlineMiddleware",
    "AsyncDeadlineTransport",
    "DeadlineTransport",
]

for _name in ("AsgiDeadlineMiddleware", "AsyncDeadlineTransport", "DeadlineTransport"):
    globals()[_name].__module__ = __name__
del _name
