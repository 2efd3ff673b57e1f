"""``hangguard doctor``: is everything in place for traces to reach Jaeger?

It checks the configuration, the installed packages (and that the OpenTelemetry API and
SDK versions match), the OTLP endpoint (it must not only accept a connection but answer
an empty OTLP export) and, when given, the Jaeger query API. Each check prints what is
wrong and how to fix it; every network step has a short timeout, so it never hangs::

    $ OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 hangguard doctor --jaeger-url http://localhost:16686
"""

from __future__ import annotations

import errno
import http.client
import importlib
import json
import math
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Literal

from rich.console import Console
from rich.text import Text

from .. import _config
from .._config import ENV_JAEGER_UI
from .._exceptions import ConfigError
from .._hints import pip_install
from ..tracing._setup import resolve_settings
from ._config_cmd import collect
from ._jaeger import has_ui, request

__all__ = [
    "PACKAGES",
    "Check",
    "Endpoint",
    "check_config",
    "check_budget_names",
    "check_jaeger",
    "check_jaeger_ui",
    "check_otlp",
    "check_otlp_metrics",
    "check_packages",
    "resolve_endpoint",
    "run_doctor",
]

Status = Literal["ok", "info", "warn", "fail"]

ENV_ENDPOINT: Final = _config.OTEL_EXPORTER_OTLP_ENDPOINT
ENV_TRACES_ENDPOINT: Final = _config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
ENV_PROTOCOL: Final = _config.OTEL_EXPORTER_OTLP_PROTOCOL

_GRPC_PORT: Final = 4317
_HTTP_PORT: Final = 4318
_JAEGER_UI_PORT: Final = 16686
_GRPC_EXPORT: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_GRPC_METRICS_EXPORT: Final = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

#: Packages whose versions the doctor reports: (distribution, extra that brings it).
PACKAGES: Final = (
    ("opentelemetry-api", None),
    ("tenacity", None),
    ("opentelemetry-sdk", "otlp"),
    ("opentelemetry-exporter-otlp-proto-http", "otlp"),
    ("opentelemetry-exporter-otlp-proto-grpc", "otlp"),
    ("mcp", "mcp"),
    ("rich", "cli"),
)


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    summary: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how traces are exported: ``url`` is the full traces URL for HTTP."""

    url: str
    protocol: str
    source: str


def resolve_endpoint(endpoint: str | None, protocol: str | None) -> Endpoint | None:
    """The OTLP traces endpoint exactly as :func:`hangguard.setup_tracing` would resolve it.

    The flags stand for its arguments; ``None`` when no endpoint is configured. Raises
    :class:`~hangguard.ConfigError` naming a bad variable or flag.
    """
    settings = resolve_settings(endpoint=endpoint, protocol=protocol)
    if settings.traces_endpoint is None:
        return None
    if endpoint is not None:
        source = "--endpoint"
    elif os.environ.get(ENV_TRACES_ENDPOINT, "").strip():
        source = ENV_TRACES_ENDPOINT
    else:
        source = ENV_ENDPOINT
    return Endpoint(settings.traces_endpoint, settings.protocol, source)


def _port_hint(port: int | None, protocol: str) -> str:
    if port == _JAEGER_UI_PORT:
        return f" Port {_JAEGER_UI_PORT} is the Jaeger UI; OTLP goes to 4317 (gRPC) or 4318 (HTTP)."
    if port == _GRPC_PORT and protocol != "grpc":
        return f" Port {_GRPC_PORT} is OTLP/gRPC: set {ENV_PROTOCOL}=grpc or use port 4318."
    if port == _HTTP_PORT and protocol == "grpc":
        return f" Port {_HTTP_PORT} is OTLP/HTTP: set {ENV_PROTOCOL}=http/protobuf or use 4317."
    return ""


def _http(
    method: str, url: str, *, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    return request(method, url, body=body, headers=headers, timeout=timeout, max_body=64 * 1024)


#: What a connect's errno means, in words a user can act on.
_ERRNO_MEANING: Final = {
    errno.EINVAL: "is not an address this machine can connect to (a broadcast, multicast "
    "or otherwise unroutable address?)",
    errno.EADDRNOTAVAIL: "is not reachable from this machine (address not available)",
    errno.ENETUNREACH: "is on a network this machine has no route to (network unreachable)",
    errno.EHOSTUNREACH: "has no route to it from this machine (host unreachable)",
    errno.ECONNRESET: "closed the connection at once (reset): is it the right port and scheme?",
}


def _network_failure(target: str, exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {target} (connection refused)"
    if isinstance(exc, TimeoutError):
        return f"{target} did not answer within {timeout:g}s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host of {target} ({exc})"
    code = exc.errno if isinstance(exc, OSError) else None
    meaning = _ERRNO_MEANING.get(code) if code is not None else None
    if meaning is not None:
        return f"{target} {meaning}"
    return f"{target} failed: {type(exc).__name__}: {exc}"


def check_otlp(endpoint: Endpoint | None, *, timeout: float) -> Check:
    """Send an empty OTLP export to ``endpoint`` and expect it accepted."""
    name = "OTLP endpoint"
    if endpoint is None:
        return Check(
            name,
            "info",
            "not configured: spans stay in this process (hangguard demo shows them as a tree)",
            f"to export, set {ENV_ENDPOINT}=http://localhost:4317 (OTLP/gRPC, the default "
            f"protocol; for OTLP/HTTP also {ENV_PROTOCOL}=http/protobuf and port 4318)",
        )
    port = urllib.parse.urlsplit(endpoint.url).port
    fix = (
        f"start the collector or Jaeger (docs/jaeger.md), or correct {endpoint.source}."
        + _port_hint(port, endpoint.protocol)
    )
    if endpoint.protocol == "grpc":
        return _check_otlp_grpc(name, endpoint, timeout=timeout, fix=fix)
    try:
        status, body = _http(
            "POST",
            endpoint.url,
            body=b"",  # an ExportTraceServiceRequest with no spans encodes to zero bytes
            headers={"Content-Type": "application/x-protobuf"},
            timeout=timeout,
        )
    except (OSError, http.client.HTTPException) as exc:
        return Check(name, "fail", _network_failure(endpoint.url, exc, timeout), fix)
    if status == 200:
        return Check(name, "ok", f"{endpoint.url} accepts OTLP/HTTP (from {endpoint.source})")
    excerpt = body[:120].decode("utf-8", "replace").strip()
    return Check(
        name,
        "fail",
        f"{endpoint.url} answered HTTP {status}, not an OTLP success"
        + (f": {excerpt}" if excerpt else ""),
        f"point {endpoint.source} at an OTLP/HTTP receiver (the collector's port 4318)."
        + _port_hint(port, endpoint.protocol),
    )


def _check_otlp_grpc(name: str, endpoint: Endpoint, *, timeout: float, fix: str) -> Check:
    parts = urllib.parse.urlsplit(endpoint.url)
    host, port = parts.hostname or "localhost", parts.port or _GRPC_PORT
    target = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return Check(name, "fail", _network_failure(target, exc, timeout), fix)
    try:
        # grpc ships no type hints: through import_module it is plainly Any.
        grpc: Any = importlib.import_module("grpc")
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )
    except ImportError:
        return Check(
            name,
            "warn",
            f"{target} accepts connections; cannot test OTLP/gRPC without the exporter",
            pip_install("otlp"),
        )
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials())
        if parts.scheme == "https"
        else grpc.insecure_channel(target)
    )
    export = channel.unary_unary(
        _GRPC_EXPORT,
        request_serializer=ExportTraceServiceRequest.SerializeToString,
        response_deserializer=ExportTraceServiceResponse.FromString,
    )
    try:
        export(ExportTraceServiceRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        return Check(
            name,
            "fail",
            f"{target} accepts connections but the OTLP/gRPC export failed: {code}",
            f"point {endpoint.source} at an OTLP/gRPC receiver (the collector's port 4317)."
            + _port_hint(port, endpoint.protocol),
        )
    finally:
        channel.close()
    return Check(name, "ok", f"{target} accepts OTLP/gRPC (from {endpoint.source})")


def check_otlp_metrics(url: str | None, protocol: str, *, timeout: float) -> Check | None:
    """Whether the metrics endpoint has a metrics service; a Check only when it has none.

    Jaeger takes traces only: ``setup_tracing()`` finds that out at its first metric
    export and turns metric export off, and this says so before the app runs.
    """
    if url is None:
        return None
    name = "OTLP metrics"
    summary = (
        f"{url} takes no metrics (Jaeger takes traces only): setup_tracing() turns metric "
        "export off for it at the first export, with one INFO line"
    )
    fix = f"set {_config.OTEL_METRICS_EXPORTER}=none to skip the attempt"
    if protocol != "grpc":
        try:
            status, _ = _http(
                "POST",
                url,
                body=b"",
                headers={"Content-Type": "application/x-protobuf"},
                timeout=timeout,
            )
        except (OSError, http.client.HTTPException):
            return None  # unreachable: the traces check says why
        return Check(name, "info", summary, fix) if status == 404 else None
    try:
        grpc: Any = importlib.import_module("grpc")
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )
    except ImportError:
        return None
    parts = urllib.parse.urlsplit(url)
    target = f"{parts.hostname or 'localhost'}:{parts.port or _GRPC_PORT}"
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials())
        if parts.scheme == "https"
        else grpc.insecure_channel(target)
    )
    export = channel.unary_unary(
        _GRPC_METRICS_EXPORT,
        request_serializer=ExportMetricsServiceRequest.SerializeToString,
        response_deserializer=ExportMetricsServiceResponse.FromString,
    )
    try:
        export(ExportMetricsServiceRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return Check(name, "info", summary.replace(url, target, 1), fix)
        return None
    finally:
        channel.close()
    return None


def check_jaeger(url: str, *, timeout: float) -> Check:
    """GET ``<url>/api/services`` and expect Jaeger's JSON answer."""
    name = "Jaeger query"
    api = url.rstrip("/") + "/api/services"
    fix = f"start Jaeger (docs/jaeger.md) or correct --jaeger-url / {ENV_JAEGER_UI}"
    try:
        status, body = _http("GET", api, body=None, headers={}, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Check(name, "fail", _network_failure(api, exc, timeout), fix)
    if status != 200:
        return Check(name, "fail", f"{api} answered HTTP {status}", fix)
    try:
        services = json.loads(body).get("data") or []
    except (ValueError, AttributeError):
        return Check(name, "fail", f"{api} answered, but not with Jaeger's JSON", fix)
    shown = ", ".join(map(str, services[:8])) or "none yet"
    return Check(name, "ok", f"{api} answers; services: {shown}")


def check_jaeger_ui(url: str, *, timeout: float) -> Check | None:
    """Whether ``url`` serves the Jaeger UI: a Jaeger built from source has the query API
    but no UI, so a trace link opens a placeholder page. ``None`` when it cannot be told."""
    base = url.rstrip("/")
    ui = has_ui(base, timeout=timeout)
    if ui is None:
        return None
    if ui:
        return Check("Jaeger UI", "ok", f"{base}/ serves the Jaeger UI")
    return Check(
        "Jaeger UI",
        "warn",
        f"{base}/ has no UI (a Jaeger built from source): trace links open a placeholder page",
        f"read a trace with 'hangguard trace --jaeger {base} TRACE_ID' (or --service NAME), "
        "or run the jaegertracing/jaeger image (docker compose up) for the UI",
    )


def check_config() -> list[Check]:
    """Every ``HANGGUARD_*`` variable parses."""
    report = collect()
    checks = [
        Check("config", "fail", message, f"fix or unset {name} (docs/env.md lists every one)")
        for name, _, message in report.errors
    ]
    checks += [
        Check("config", "warn", f"{name} is set but hangguard does not read it", "a typo?")
        for name in report.unknown
    ]
    checks += [
        Check(
            "config",
            "warn" if "has no effect" in note else "info",
            note,
            f"unset {_config.ENV_TRACE_FILE}, or unset the endpoint to keep spans local"
            if "has no effect" in note
            else "call hangguard.setup_tracing() once at start-up",
        )
        for note in report.notes
    ]
    if not any(c.status in ("fail", "warn") for c in checks):
        set_ = [r.name for r in report.hangguard if r.source == "env"]
        checks.append(
            Check("config", "ok", f"valid ({', '.join(set_) if set_ else 'all defaults'})")
        )
    return checks


#: What records work still in flight, in the order doctor shows them.
_INFLIGHT_VARS: Final = (_config.ENV_PS, _config.ENV_SNAPSHOT_AFTER, _config.ENV_RECORD_ON_SIGTERM)


def check_inflight() -> Check:
    """What will show work still in flight: ``hangguard ps``, live snapshots, SIGTERM.

    Each is what the library will do with the environment as it is (a bad value is the
    config check's failure; here it is named as not in force).
    """
    shown: list[str] = []
    bad: list[str] = []
    table = {v.name: v for v in _config.TABLE}
    for name in _INFLIGHT_VARS:
        var = table[name]
        try:
            value = var.read()
        except ConfigError:
            bad.append(name)
            shown.append(f"{name}=invalid")
            continue
        raw = os.environ.get(name)
        source = "env" if raw is not None else "default"
        shown.append(f"{name}={_inflight_text(name, value)} ({source})")
    summary = (
        "hangguard ps watcher, live snapshots of open work, spans ended on SIGTERM: "
        + "; ".join(shown)
    )
    if bad:
        return Check(
            "in-flight", "warn", summary, f"fix {', '.join(bad)} (see the config check above)"
        )
    return Check("in-flight", "info", summary)


def _inflight_text(name: str, value: object) -> str:
    if name == _config.ENV_PS and value is None:
        return "auto (on with setup_tracing())"
    if name == _config.ENV_SNAPSHOT_AFTER:
        return "never" if isinstance(value, float) and math.isinf(value) else f"{value:g}s"
    return "on" if value else "off"


def check_packages(version: Callable[[str], str] = metadata.version) -> list[Check]:
    """Installed versions; the OpenTelemetry API and SDK must be the same release."""
    found: dict[str, str] = {}
    missing: list[tuple[str, str | None]] = []
    for dist, extra in PACKAGES:
        try:
            found[dist] = version(dist)
        except metadata.PackageNotFoundError:
            missing.append((dist, extra))
    shown = ", ".join(f"{d} {v}" for d, v in found.items())
    checks = [Check("packages", "ok", shown)]
    for dist, extra in missing:
        checks.append(
            Check(
                "packages",
                "warn",
                f"{dist} is not installed",
                pip_install(extra) if extra else f"pip install {dist}",
            )
        )
    api, sdk = found.get("opentelemetry-api"), found.get("opentelemetry-sdk")
    if api and sdk and api != sdk:
        checks.append(
            Check(
                "packages",
                "fail",
                f"opentelemetry-api {api} and opentelemetry-sdk {sdk} differ; they are "
                "released together and must match",
                f"pip install 'opentelemetry-api=={sdk}' (or upgrade both together)",
            )
        )
    return checks


_MARK: Final[dict[Status, tuple[str, str]]] = {
    "ok": ("ok", "green"),
    "info": ("info", "cyan"),
    "warn": ("warn", "yellow"),
    "fail": ("FAIL", "bold red"),
}


def check_budget_names(modules: Sequence[str]) -> list[Check]:
    """Import ``modules`` (the user's ops) and name each ``HANGGUARD_BUDGETS`` entry that
    matches none of the ops they decorate, with the close matches; and each empty entry."""
    name = "budgets"
    checks = []
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -c "import MODULE"` would find it
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"--import {module} failed: {type(exc).__name__}: {exc}",
                    "run it from the directory the module is found from, or fix the module",
                )
            )
    if not os.environ.get(_config.ENV_BUDGETS):
        return checks
    try:
        problems = _config.unmatched_budgets()
    except ConfigError:
        return checks  # check_config reports it
    if not modules:
        checks.append(
            Check(
                name,
                "info",
                f"{_config.ENV_BUDGETS} entries not compared with your ops",
                "pass --import MODULE (the module that defines them) to find misspelled names",
            )
        )
        problems = [p for p in problems if p.kind == "empty"]
    elif not any(p.kind == "unmatched" for p in problems):
        ops = ", ".join(sorted(_config.budgets()))
        checks.append(Check(name, "ok", f"every {_config.ENV_BUDGETS} entry names an op: {ops}"))
    fixes = {
        "unmatched": f"correct the name in {_config.ENV_BUDGETS} (entries are exact op names)",
        "empty": "write OP=none for no limit, or give a duration",
    }
    return [*checks, *(Check(name, "warn", p.message, fixes[p.kind]) for p in problems)]


def run_doctor(
    out: Console,
    *,
    endpoint: str | None,
    protocol: str | None,
    jaeger_url: str | None,
    timeout: float,
    as_json: bool,
    imports: Sequence[str] = (),
) -> int:
    """Run every check; returns 1 when one failed, else 0."""
    checks = [
        *check_config(),
        *check_budget_names(imports),
        check_inflight(),
        *check_packages(),
    ]
    try:
        resolved = resolve_endpoint(endpoint, protocol)
    except ConfigError as exc:
        if exc.name in ("endpoint", "protocol"):  # the flags stand for these arguments
            checks.append(Check("OTLP endpoint", "fail", f"--{exc}", f"correct --{exc.name}"))
        else:
            checks.append(
                Check("OTLP endpoint", "fail", f"not checked: {exc.name} is invalid (see config)")
            )
    else:
        checks.append(check_otlp(resolved, timeout=timeout))
        if resolved is not None and checks[-1].status == "ok":
            settings = resolve_settings(endpoint=endpoint, protocol=protocol)
            metrics = check_otlp_metrics(
                settings.metrics_endpoint, settings.metrics_protocol, timeout=timeout
            )
            if metrics is not None:
                checks.append(metrics)
    jaeger = jaeger_url or os.environ.get(ENV_JAEGER_UI)
    if jaeger:
        checks.append(check_jaeger(jaeger, timeout=timeout))
        if checks[-1].status == "ok" and (ui := check_jaeger_ui(jaeger, timeout=timeout)):
            checks.append(ui)
    else:
        checks.append(
            Check(
                "Jaeger",
                "info",
                "not checked",
                f"pass --jaeger-url URL (or set {ENV_JAEGER_UI}) to check Jaeger's query API",
            )
        )
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        out.file.write(
            json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}, indent=2) + "\n"
        )
        return 1 if failed else 0
    for check in checks:
        mark, style = _MARK[check.status]
        line = Text.assemble((f"[{mark:>4}] ", style), (f"{check.name}: ", "bold"), check.summary)
        out.print(line, soft_wrap=True)
        if check.fix and check.status != "ok":
            out.print(Text(f"       fix: {check.fix}", style="dim"), soft_wrap=True)
    if failed:
        out.print(Text(f"{len(failed)} problem(s) found", style="bold red"))
        return 1
    out.print(Text("no problems found", style="green"))
    return 0
