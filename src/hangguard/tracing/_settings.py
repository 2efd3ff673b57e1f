"""What :func:`setup_tracing` will use: :class:`TracingSettings` and :func:`resolve_settings`.

Resolves the exporter choice from setup_tracing's arguments and the standard ``OTEL_*``
variables (arguments win) and validates it, raising :class:`ConfigError` naming the
argument or variable at fault. Kept apart from the SDK wiring because it installs nothing
and needs no SDK: ``resolve_settings()`` and the CLI's ``config`` and ``doctor`` commands
show the choice without making it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .._config import (
    ENV_TRACE_FILE,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from .._deadline import check_timeout
from .._exceptions import ConfigError

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "TracingSettings", "resolve_settings"]


#: How long ``shutdown()`` and the process exit may wait for telemetry, by default.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 2.0

_PROTOCOLS: Final = ("grpc", "http/protobuf")
_SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _check_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name}={url!r} is not an OTLP endpoint URL: use http://host:port "
            "(or https://) as in http://localhost:4317",
            name=name,
            value=url,
        )
    return url


def _signal_url(base: str, signal: str, protocol: str) -> str:
    # Per the OTLP exporter spec, a base endpoint gets the signal's path appended for
    # HTTP; gRPC takes the address as it is.
    if protocol == "grpc":
        return base
    return base.rstrip("/") + f"/v1/{signal}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingSettings:
    """What :func:`setup_tracing` resolved from its arguments and the ``OTEL_*`` variables.

    ``exporter`` is ``"otlp"`` or ``"local"``; the endpoints are full URLs as the exporters
    use them (``None`` where that signal is not sent over OTLP)::

        hangguard.tracing.resolve_settings().traces_endpoint  # what setup_tracing() would use
    """

    exporter: str
    protocol: str
    traces_endpoint: str | None
    metrics_endpoint: str | None
    metrics_protocol: str
    sampler: str
    sampler_arg: float | None
    shutdown_timeout: float
    trace_file: str | None


def _resolve_protocol(arg: str | None, signal_var: str) -> str:
    if arg is not None:
        name, value = "protocol", arg
    else:
        name = signal_var if _env(signal_var) else OTEL_EXPORTER_OTLP_PROTOCOL
        value = _env(name) or "grpc"
    if value not in _PROTOCOLS:
        raise ConfigError(
            f"{name}={value!r} is not supported: use 'grpc' or 'http/protobuf'",
            name=name,
            value=value,
        )
    return value


def _resolve_endpoint(arg: str | None, signal: str, signal_var: str, protocol: str) -> str | None:
    if arg is not None:
        return _signal_url(_check_url(arg, "endpoint"), signal, protocol)
    exact = _env(signal_var)
    if exact is not None:
        return _check_url(exact, signal_var)
    base = _env(OTEL_EXPORTER_OTLP_ENDPOINT)
    if base is not None:
        return _signal_url(_check_url(base, OTEL_EXPORTER_OTLP_ENDPOINT), signal, protocol)
    return None


def _resolve_sampler(sampler: str | None, sampler_arg: float | None) -> tuple[str, float | None]:
    name_src = "sampler" if sampler is not None else OTEL_TRACES_SAMPLER
    name = (sampler if sampler is not None else _env(OTEL_TRACES_SAMPLER)) or (
        "parentbased_always_on"
    )
    name = name.strip().lower()
    if name not in _SAMPLERS:
        raise ConfigError(
            f"{name_src}={name!r} is not a sampler hangguard can build: use one of "
            + ", ".join(_SAMPLERS)
            + " (or pass a Sampler object)",
            name=name_src,
            value=name,
        )
    if not name.endswith("traceidratio"):
        return name, None
    if sampler_arg is not None:
        arg_src, raw = "sampler_arg", repr(sampler_arg)
        ratio = float(sampler_arg)
    else:
        arg_src = OTEL_TRACES_SAMPLER_ARG
        raw = _env(OTEL_TRACES_SAMPLER_ARG) or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            ratio = math.nan
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(
            f"{arg_src}={raw} must be a ratio between 0 and 1 for sampler {name}",
            name=arg_src,
            value=raw,
        )
    return name, ratio


def _check_resource_attributes() -> None:
    # The SDK skips a malformed entry with a log line; a typo here would silently lose
    # e.g. deployment.environment, so it is an error instead.
    raw = _env(OTEL_RESOURCE_ATTRIBUTES)
    if raw is None:
        return
    for item in raw.split(","):
        if item.strip() and "=" not in item:
            raise ConfigError(
                f"{OTEL_RESOURCE_ATTRIBUTES}={raw!r}: entry {item.strip()!r} is not key=value",
                name=OTEL_RESOURCE_ATTRIBUTES,
                value=raw,
            )


def resolve_settings(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    trace_file: str | os.PathLike[str] | None = None,
) -> TracingSettings:
    """Resolve :func:`setup_tracing`'s exporter choice without installing anything.

    Arguments beat the environment; bad values raise :class:`ConfigError` naming the
    argument or variable::

        settings = hangguard.tracing.resolve_settings()
        print(settings.exporter, settings.traces_endpoint)
    """
    timeout = check_timeout(shutdown_timeout, "shutdown_timeout")
    if math.isinf(timeout):
        raise ValueError("shutdown_timeout must be finite: it bounds the process exit")
    if sampler_arg is not None and (
        isinstance(sampler_arg, bool) or not isinstance(sampler_arg, (int, float))
    ):
        raise TypeError(f"sampler_arg must be a number, got {sampler_arg!r}")
    traces_protocol = _resolve_protocol(protocol, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
    metrics_protocol = _resolve_protocol(protocol, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
    traces_endpoint = _resolve_endpoint(
        endpoint, "traces", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, traces_protocol
    )
    metrics_endpoint = _resolve_endpoint(
        endpoint, "metrics", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, metrics_protocol
    )
    sampler_name, ratio = _resolve_sampler(sampler, sampler_arg)
    _check_resource_attributes()
    file = os.fspath(trace_file) if trace_file is not None else _env(ENV_TRACE_FILE)
    return TracingSettings(
        exporter="otlp" if traces_endpoint is not None else "local",
        protocol=traces_protocol,
        traces_endpoint=traces_endpoint,
        metrics_endpoint=metrics_endpoint,
        metrics_protocol=metrics_protocol,
        sampler=sampler_name,
        sampler_arg=ratio,
        shutdown_timeout=timeout,
        trace_file=file,
    )
