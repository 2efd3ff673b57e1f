"""Traces read back from Jaeger's query API, as span records the tree renders.

A Jaeger built from source (``scripts/build-jaeger.sh``) serves the query API but no UI,
so ``hangguard trace --jaeger URL TRACE_ID`` reads the trace from the API and prints the
tree ``hangguard demo`` and ``hangguard trace FILE`` print::

    $ hangguard trace --jaeger http://localhost:16686 4bf92f3577b34da6a3ce929d0e0e4736
    $ hangguard trace --jaeger http://localhost:16686 --service my-app --list

The API is ``/api/v3`` (OTLP JSON: nanosecond times, typed attributes, events with their
attributes), which every Jaeger v2 and Jaeger v1 since 1.35 serves. Requests connect
directly (no proxy), with a timeout.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..tracing._records import AttrValue, SpanEventRecord, SpanRecord

__all__ = [
    "NO_UI_MARKER",
    "JaegerError",
    "get",
    "has_ui",
    "records_from_otlp_json",
    "trace_by_id",
    "traces_of_service",
]

#: What the query service of a Jaeger built without its UI answers at ``/``.
NO_UI_MARKER: Final = "This is not the Jaeger UI you are looking for"

_STATUS: Final = {0: "UNSET", 1: "OK", 2: "ERROR"}
_KIND: Final = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_MAX_BODY: Final = 64 * 1024 * 1024


class JaegerError(Exception):
    """Jaeger could not be reached, or answered something that is not a trace."""


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    max_body: int = _MAX_BODY,
) -> tuple[int, bytes]:
    """Send one request to ``url`` directly (no proxy); returns the status and the body."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read(max_body)
    finally:
        conn.close()


def get(url: str, *, timeout: float) -> tuple[int, bytes]:
    """GET ``url`` directly (no proxy); returns the status and the body."""
    return request("GET", url, headers={"Accept": "application/json, text/html"}, timeout=timeout)


def has_ui(base: str, *, timeout: float) -> bool | None:
    """Whether the Jaeger at ``base`` serves its UI; ``None`` when it cannot be asked."""
    try:
        status, body = get(base.rstrip("/") + "/", timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200:
        return None
    return NO_UI_MARKER.encode() not in body


def _value(v: Mapping[str, Any]) -> AttrValue | None:
    if "stringValue" in v:
        return str(v["stringValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])  # int64 travels as a JSON string
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        items = (_value(x) for x in v["arrayValue"].get("values", []))
        return tuple(x for x in items if x is not None and not isinstance(x, tuple))
    return None


def _attrs(items: list[Mapping[str, Any]] | None) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for a in items or []:
        value = _value(a.get("value", {}))
        if value is not None:
            out[str(a["key"])] = value
    return out


def _code(value: Any, names: Mapping[int, str], default: str) -> str:
    # OTLP JSON may carry an enum as its number or as its name (STATUS_CODE_ERROR).
    if isinstance(value, int):
        return names.get(value, default)
    if isinstance(value, str) and value:
        return value.rsplit("_", 1)[-1].upper()
    return default


def records_from_otlp_json(data: Mapping[str, Any]) -> list[SpanRecord]:
    """Jaeger's ``/api/v3`` answer (OTLP JSON under ``result``) as span records."""
    out = []
    for rs in data.get("result", {}).get("resourceSpans", []):
        resource = _attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            scope = str(ss.get("scope", {}).get("name", ""))
            for sp in ss.get("spans", []):
                status = sp.get("status", {})
                out.append(
                    SpanRecord(
                        trace_id=str(sp["traceId"]).lower(),
                        span_id=str(sp["spanId"]).lower(),
                        parent_span_id=str(sp["parentSpanId"]).lower()
                        if sp.get("parentSpanId")
                        else None,
                        name=str(sp["name"]),
                        kind=_code(sp.get("kind"), _KIND, "INTERNAL"),
                        start_ns=int(sp["startTimeUnixNano"]),
                        end_ns=int(sp["endTimeUnixNano"]),
                        status=_code(status.get("code"), _STATUS, "UNSET"),
                        status_description=status.get("message") or None,
                        attributes=_attrs(sp.get("attributes")),
                        events=tuple(
                            SpanEventRecord(
                                name=str(e["name"]),
                                timestamp_ns=int(e["timeUnixNano"]),
                                attributes=_attrs(e.get("attributes")),
                            )
                            for e in sp.get("events", [])
                        ),
                        resource=resource,
                        scope=scope,
                    )
                )
    return out


def _query(url: str, *, timeout: float, what: str) -> list[SpanRecord]:
    try:
        status, body = get(url, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise JaegerError(f"cannot reach Jaeger's query API at {url}: {exc}") from exc
    if status == 404:
        return []
    if status != 200:
        raise JaegerError(f"{url} answered HTTP {status}: {body[:200].decode(errors='replace')}")
    try:
        return records_from_otlp_json(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise JaegerError(f"{url} answered, but not with {what} as OTLP JSON: {exc}") from exc


def trace_by_id(base: str, trace_id: str, *, timeout: float) -> list[SpanRecord]:
    """The spans of one trace (``GET /api/v3/traces/{id}``); ``[]`` when Jaeger has none."""
    tid = trace_id.strip().lower()
    url = f"{base.rstrip('/')}/api/v3/traces/{urllib.parse.quote(tid)}"
    return _query(url, timeout=timeout, what="a trace")


def traces_of_service(
    base: str, service: str, *, limit: int, lookback: timedelta, timeout: float
) -> list[SpanRecord]:
    """The spans of the last ``limit`` traces of ``service`` started within ``lookback``."""
    now = datetime.now(UTC)

    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    params = urllib.parse.urlencode(
        {
            "query.service_name": service,
            "query.start_time_min": iso(now - lookback),
            "query.start_time_max": iso(now + timedelta(minutes=1)),
            "query.num_traces": str(limit),
        }
    )
    url = f"{base.rstrip('/')}/api/v3/traces?{params}"
    return _query(url, timeout=timeout, what="traces")
