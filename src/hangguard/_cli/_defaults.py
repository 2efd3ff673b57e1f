"""Defaults the argument parser shows, kept free of rich so every ``--help`` works without
the cli extra."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_JAEGER_UI"]

#: Where Jaeger's UI and query API listen by default (docker compose, a source build).
DEFAULT_JAEGER_UI: Final = "http://localhost:16686"
