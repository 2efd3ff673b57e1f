"""The environment a Ray worker needs from the driver: :func:`worker_env`."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._worker import ENV_WORKER_TRACING

__all__ = ["worker_env"]


def worker_env(*, tracing: bool = True, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``env_vars`` to give Ray workers so they trace and behave like the driver.

    Every ``OTEL_*`` and ``HANGGUARD_*`` variable of the driver (``environ``, default
    ``os.environ``), plus ``HANGGUARD_RAY_WORKER_TRACING=1`` when ``tracing`` (the opt-in
    that lets hangguard set up an exporter in each worker process)::

        ray.init(runtime_env={"env_vars": hangguard.ray.worker_env()})
    """
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k.startswith(("OTEL_", "HANGGUARD_"))}
    if tracing:
        env[ENV_WORKER_TRACING] = "1"
    else:
        env.pop(ENV_WORKER_TRACING, None)
    return env
