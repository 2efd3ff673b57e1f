"""What :func:`setup_tracing` will use: :class:`TracingSettings` and :func:`resolve_settings`.

Resolves the exporter choice from setup_tracing's arguments and the standard ``OTEL_*``
variables (arguments win) and validates it, raising :class:`ConfigError` naming the
argument or variable at fault. Kept apart from the SDK wiring because it installs nothing
and needs no SDK: ``resolve_settings()`` and the CLI's ``config`` and ``doctor`` commands
show the choice without making it.

Every ``OTEL_*`` variable hangguard reads or hands to the SDK is in one table,
:data:`OTEL_VARS`, each with the parser of its kind of value (a URL, a number of seconds,
a whole number, ``key=value`` pairs, one of a few words). ``resolve_settings`` and
``hangguard config`` both go through it, so a value is accepted or refused, with the same
words, everywhere. The SDK's exporters are always given the parsed values, so they never
parse a variable themselves (they would fail with a bare ``ValueError``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from .._config import (
    ENV_TRACE_FILE,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_METRICS_EXPORTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from .._deadline import check_timeout
from .._exceptions import ConfigError

__all__ = [
    "DEFAULT_EXPORT_TIMEOUT",
    "DEFAULT_MAX_EXPORT_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_SCHEDULE_DELAY_MS",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "OTEL_VARS",
    "OtelVar",
    "TracingSettings",
    "check_otel_env",
    "resolve_settings",
]


#: How long ``shutdown()`` and the process exit may wait for telemetry, by default.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 2.0
#: One OTLP export's timeout in seconds, as the SDK's exporters default it.
DEFAULT_EXPORT_TIMEOUT: Final = 10.0
#: Finished spans held for export at most. 16 times the SDK's 2048: a join that ends
#: 20,000 tasks at once must not overflow it while the export thread catches up. A
#: hangguard task span holds about 3 KB (measured, SDK 1.45, CPython 3.11), so a full
#: queue holds about 100 MB; docs/jaeger.md states the bound.
DEFAULT_MAX_QUEUE_SIZE: Final = 32_768
#: Spans per OTLP request: the SDK's default. Larger requests risk the collectors' 4 MiB
#: default message limit once spans carry exception stack traces.
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512
#: How long a batch waits to fill before it is sent anyway, as the SDK defaults it.
DEFAULT_SCHEDULE_DELAY_MS: Final = 5000

_PROTOCOLS: Final = ("grpc", "http/protobuf")
_SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_COMPRESSIONS: Final = ("gzip", "deflate", "none")
_FLAGS: Final = {"true": True, "false": False}


# -- one parser per kind of value: (text, name) -> value, ConfigError naming both ----------


def _bad(name: str, text: str, what: str) -> ConfigError:
    return ConfigError(f"{name}={text!r} {what}", name=name, value=text)


def parse_url(text: str, name: str) -> str:
    """An ``http://`` or ``https://`` URL with a host and, if given, a valid port."""
    hint = (
        "is not an OTLP endpoint URL: use http://host:port (or https://), "
        "e.g. http://localhost:4317"
    )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise _bad(name, text, f"{hint} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(name, text, hint)
    if port == 0:
        raise _bad(name, text, f"{hint} (port 0)")
    return text


def _choice(words: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(text: str, name: str) -> str:
        word = text.strip().lower()
        if word not in words:
            raise _bad(name, text, "is not one of " + ", ".join(words))
        return word

    return parse


parse_protocol = _choice(_PROTOCOLS)
parse_sampler = _choice(_SAMPLERS)
parse_compression = _choice(_COMPRESSIONS)
parse_metrics_exporter = _choice(("otlp", "none"))


def parse_seconds(text: str, name: str) -> float:
    """A number of seconds > 0, no unit (what the Python SDK reads for OTLP timeouts)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise _bad(name, text, "must be a number of seconds > 0, without a unit (e.g. 10)")
    return value


def parse_count(text: str, name: str) -> int:
    """A whole number >= 1 (sizes, and the milliseconds of ``OTEL_BSP_SCHEDULE_DELAY``)."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise _bad(name, text, "must be a whole number >= 1")
    return value


def parse_ratio(text: str, name: str) -> float:
    """A number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise _bad(name, text, "must be a ratio between 0 and 1")
    return value


def parse_pairs(text: str, name: str) -> str:
    """``key=value,key=value``. The SDK would skip a malformed entry with a log line, and a
    typo would silently lose a resource attribute or an API-key header."""
    for item in text.split(","):
        key, sep, _ = item.partition("=")
        if item.strip() and (not sep or not key.strip()):
            raise _bad(name, text, f"has entry {item.strip()!r}, which is not key=value")
    return text


def parse_flag(text: str, name: str) -> bool:
    """``true`` or ``false`` (the SDK takes anything else as false, silently)."""
    word = text.strip().lower()
    if word not in _FLAGS:
        raise _bad(name, text, "must be true or false")
    return _FLAGS[word]


def parse_text(text: str, name: str) -> str:
    """Any text."""
    return text


@dataclass(frozen=True, slots=True)
class OtelVar:
    """One ``OTEL_*`` variable: its default as text, its parser, and what it does."""

    name: str
    default: str
    parse: Callable[[str, str], object]
    description: str


def _table(*rows: OtelVar) -> Mapping[str, OtelVar]:
    return MappingProxyType({r.name: r for r in rows})


#: Every ``OTEL_*`` variable hangguard reads (or has the SDK read), with its parser.
OTEL_VARS: Final = _table(
    OtelVar(OTEL_SERVICE_NAME, "unknown_service", parse_text, "service.name of every span"),
    OtelVar(OTEL_RESOURCE_ATTRIBUTES, "", parse_pairs, "more resource attributes, k=v,k=v"),
    OtelVar(
        OTEL_EXPORTER_OTLP_ENDPOINT,
        "",
        parse_url,
        "collector base URL; unset: spans stay in the process (hangguard demo's tree)",
    ),
    OtelVar(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "", parse_url, "full URL for traces (beats the base)"
    ),
    OtelVar(
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "", parse_url, "full URL for metrics (beats the base)"
    ),
    OtelVar(
        OTEL_EXPORTER_OTLP_PROTOCOL,
        "grpc",
        parse_protocol,
        "grpc (port 4317) or http/protobuf (port 4318)",
    ),
    OtelVar(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "", parse_protocol, "the protocol for traces"),
    OtelVar(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "", parse_protocol, "the protocol for metrics"),
    OtelVar(OTEL_EXPORTER_OTLP_HEADERS, "", parse_pairs, "headers sent to the collector, k=v,k=v"),
    OtelVar(OTEL_EXPORTER_OTLP_TRACES_HEADERS, "", parse_pairs, "the headers for traces"),
    OtelVar(OTEL_EXPORTER_OTLP_METRICS_HEADERS, "", parse_pairs, "the headers for metrics"),
    OtelVar(
        OTEL_EXPORTER_OTLP_TIMEOUT,
        "10",
        parse_seconds,
        "one export's timeout in seconds (the Python SDK reads seconds, not the spec's ms)",
    ),
    OtelVar(OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, "", parse_seconds, "the timeout for traces"),
    OtelVar(OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, "", parse_seconds, "the timeout for metrics"),
    OtelVar(OTEL_EXPORTER_OTLP_COMPRESSION, "none", parse_compression, "gzip, deflate or none"),
    OtelVar(OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, "", parse_compression, "the same, for traces"),
    OtelVar(OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, "", parse_compression, "the same, for metrics"),
    OtelVar(
        OTEL_BSP_MAX_QUEUE_SIZE,
        str(DEFAULT_MAX_QUEUE_SIZE),
        parse_count,
        "finished spans held for export at most; beyond it they are dropped and counted",
    ),
    OtelVar(
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
        str(DEFAULT_MAX_EXPORT_BATCH_SIZE),
        parse_count,
        "spans per export request (at most the queue size)",
    ),
    OtelVar(
        OTEL_BSP_SCHEDULE_DELAY,
        str(DEFAULT_SCHEDULE_DELAY_MS),
        parse_count,
        "milliseconds a batch waits to fill before it is sent",
    ),
    OtelVar(
        OTEL_TRACES_SAMPLER, "parentbased_always_on", parse_sampler, "which traces are recorded"
    ),
    OtelVar(OTEL_TRACES_SAMPLER_ARG, "1.0", parse_ratio, "the ratio of the *traceidratio samplers"),
    OtelVar(OTEL_SDK_DISABLED, "false", parse_flag, "true: the SDK records nothing"),
    OtelVar(
        OTEL_METRICS_EXPORTER,
        "otlp",
        parse_metrics_exporter,
        "none: no metrics over OTLP (Jaeger takes traces only)",
    ),
)


def _env(name: str) -> str | None:
    # The specification: an empty value means the same as unset.
    value = os.environ.get(name, "").strip()
    return value or None


def _read(name: str) -> object | None:
    """The parsed value of ``name`` from the environment, ``None`` when unset."""
    raw = _env(name)
    return None if raw is None else OTEL_VARS[name].parse(raw, name)


def check_otel_env() -> dict[str, ConfigError]:
    """Parse every ``OTEL_*`` variable of :data:`OTEL_VARS` now: the bad ones, by name."""
    errors: dict[str, ConfigError] = {}
    for name in OTEL_VARS:
        try:
            _read(name)
        except ConfigError as exc:
            errors[name] = exc
    return errors


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
    use them (``None`` where that signal is not sent over OTLP). The timeouts and
    ``schedule_delay`` are in seconds; ``max_queue_size`` is how many finished spans wait
    for export at most (more are dropped and counted in ``stats()``)::

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
    traces_timeout: float = DEFAULT_EXPORT_TIMEOUT
    metrics_timeout: float = DEFAULT_EXPORT_TIMEOUT
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE
    schedule_delay: float = DEFAULT_SCHEDULE_DELAY_MS / 1000


def _resolve_protocol(arg: str | None, signal_var: str) -> str:
    if arg is not None:
        return parse_protocol(arg, "protocol")
    for name in (signal_var, OTEL_EXPORTER_OTLP_PROTOCOL):
        value = _read(name)
        if isinstance(value, str):
            return value
    return "grpc"


def _resolve_endpoint(arg: str | None, signal: str, signal_var: str, protocol: str) -> str | None:
    if arg is not None:
        return _signal_url(parse_url(arg, "endpoint"), signal, protocol)
    exact = _read(signal_var)
    if isinstance(exact, str):
        return exact
    base = _read(OTEL_EXPORTER_OTLP_ENDPOINT)
    if isinstance(base, str):
        return _signal_url(base, signal, protocol)
    return None


def _resolve_timeout(arg: float | None, signal_var: str) -> float:
    if arg is not None:
        return arg
    for name in (signal_var, OTEL_EXPORTER_OTLP_TIMEOUT):
        value = _read(name)
        if isinstance(value, float):
            return value
    return DEFAULT_EXPORT_TIMEOUT


def _resolve_sampler(sampler: str | None, sampler_arg: float | None) -> tuple[str, float | None]:
    if sampler is not None:
        name = parse_sampler(sampler, "sampler")
    else:
        env_name = _read(OTEL_TRACES_SAMPLER)
        name = env_name if isinstance(env_name, str) else "parentbased_always_on"
    # Checked whether or not the sampler uses it: a bad value is a mistake either way.
    env_ratio = _read(OTEL_TRACES_SAMPLER_ARG)
    if not name.endswith("traceidratio"):
        return name, None
    if sampler_arg is not None:
        if not 0.0 <= sampler_arg <= 1.0:
            raise ConfigError(
                f"sampler_arg={sampler_arg!r} must be a ratio between 0 and 1",
                name="sampler_arg",
                value=sampler_arg,
            )
        return name, float(sampler_arg)
    return name, env_ratio if isinstance(env_ratio, float) else 1.0


def _count_arg(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name} must be a whole number >= 1, got {value!r}", name=name, value=value
        )
    return value


def _resolve_queue(queue_arg: int | None, batch_arg: int | None) -> tuple[int, int]:
    queue_src, batch_src = "max_queue_size", "max_export_batch_size"
    queue = _count_arg(queue_arg, queue_src)
    if queue is None:
        queue_src = OTEL_BSP_MAX_QUEUE_SIZE
        env_queue = _read(OTEL_BSP_MAX_QUEUE_SIZE)
        queue = env_queue if isinstance(env_queue, int) else DEFAULT_MAX_QUEUE_SIZE
    batch = _count_arg(batch_arg, batch_src)
    if batch is None:
        batch_src = OTEL_BSP_MAX_EXPORT_BATCH_SIZE
        env_batch = _read(OTEL_BSP_MAX_EXPORT_BATCH_SIZE)
        # A small queue alone is fine: the default batch shrinks to fit it.
        batch = (
            env_batch if isinstance(env_batch, int) else min(DEFAULT_MAX_EXPORT_BATCH_SIZE, queue)
        )
    if batch > queue:
        raise ConfigError(
            f"{batch_src}={batch} is larger than {queue_src}={queue}: a batch is taken "
            "from the queue, so it can be at most as large",
            name=batch_src,
            value=batch if batch_arg is not None else _env(batch_src),
        )
    return queue, batch


def resolve_settings(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    trace_file: str | os.PathLike[str] | None = None,
    export_timeout: float | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
) -> TracingSettings:
    """Resolve :func:`setup_tracing`'s exporter choice without installing anything.

    Arguments beat the environment; bad values raise :class:`ConfigError` naming the
    argument or variable. Every ``OTEL_*`` variable of :data:`OTEL_VARS` that is set is
    checked, also the ones only the SDK reads and the ones an argument overrides, so a
    value ``hangguard config`` calls bad never passes here::

        settings = hangguard.tracing.resolve_settings()
        print(settings.exporter, settings.traces_endpoint)
    """
    timeout = check_timeout(shutdown_timeout, "shutdown_timeout")
    if math.isinf(timeout):
        raise ValueError("shutdown_timeout must be finite: it bounds the process exit")
    per_export = None
    if export_timeout is not None:
        per_export = check_timeout(export_timeout, "export_timeout")
        if per_export == 0 or math.isinf(per_export):
            raise ValueError(f"export_timeout must be > 0 and finite, got {export_timeout!r}")
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
    if _read(OTEL_METRICS_EXPORTER) == "none":
        metrics_endpoint = None  # metrics stay in the process
    sampler_name, ratio = _resolve_sampler(sampler, sampler_arg)
    queue, batch = _resolve_queue(max_queue_size, max_export_batch_size)
    delay = _read(OTEL_BSP_SCHEDULE_DELAY)
    traces_timeout = _resolve_timeout(per_export, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT)
    metrics_timeout = _resolve_timeout(per_export, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT)
    # The rest is read by the SDK itself: checked here so it fails this call, named.
    for name in OTEL_VARS:
        _read(name)
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
        traces_timeout=traces_timeout,
        metrics_timeout=metrics_timeout,
        max_queue_size=queue,
        max_export_batch_size=batch,
        schedule_delay=(delay if isinstance(delay, int) else DEFAULT_SCHEDULE_DELAY_MS) / 1000,
    )
