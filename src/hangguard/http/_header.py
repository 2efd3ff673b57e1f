"""The deadline on the wire: ``Hangguard-Timeout-Ms``, the caller's time left in milliseconds.

Relative, like gRPC's ``grpc-timeout`` and Envoy's ``x-envoy-expected-rq-timeout-ms``, so
the two hosts' clocks never need to agree; the hop's own latency is what the server
loses. An integer of milliseconds, like Envoy's and unlike gRPC's ``<digits><unit>``
grammar, so any proxy or log reads it as it is; rounded up, so the server's deadline,
which starts when the request arrives, never fires before the caller's. Named for
hangguard, not Envoy, because Envoy sets and reads its own header with its own meaning
(the route timeout it applies); a server here reads Envoy's header too, as a fallback,
so a budget set at the mesh edge still binds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

__all__ = ["ENVOY_TIMEOUT_HEADER", "TIMEOUT_HEADER", "encode_timeout", "parse_timeout"]

#: The request header that carries the caller's remaining budget (relative milliseconds).
TIMEOUT_HEADER: Final = "hangguard-timeout-ms"
#: Envoy's header of the same meaning, read when ours is absent.
ENVOY_TIMEOUT_HEADER: Final = "x-envoy-expected-rq-timeout-ms"


def encode_timeout(seconds: float) -> str:
    """The header value for ``seconds`` left: whole milliseconds, rounded up."""
    return str(math.ceil(seconds * 1000))


def parse_timeout(headers: Mapping[str, str]) -> tuple[str, float] | None:
    """The header that carried a budget and the budget in seconds, or ``None``.

    ``headers`` has lower-case names. Raises ``ValueError`` naming the header when its
    value is not a whole, non-negative number of milliseconds.
    """
    for name in (TIMEOUT_HEADER, ENVOY_TIMEOUT_HEADER):
        raw = headers.get(name)
        if raw is None:
            continue
        text = raw.strip()
        if not text.isdigit():
            raise ValueError(
                f"header {name} must be a whole number of milliseconds >= 0, got {raw!r}"
            )
        return name, int(text) / 1000.0
    return None
