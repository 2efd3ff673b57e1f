"""Helpers of the end-to-end tests: the Jaeger processes, the app run, Jaeger's query API.

(The fixtures using them are in conftest.py.)

A real Jaeger and a real collector for the end-to-end tests, both from the Jaeger v2 binary.

Jaeger v2 is an OpenTelemetry Collector distribution, so one binary runs
``collector/jaeger.yaml`` (Jaeger, in-memory storage) and ``collector/otel-collector.yaml``
(the collector tier, exporting to that Jaeger): the tests run the very files users deploy,
on free ports of 127.0.0.1 given through the files' ``${env:...}`` variables.

The binary comes from ``HANGGUARD_JAEGER_BIN``, else the build cache, else (when ``go`` is
on PATH) ``scripts/build-jaeger.sh`` builds it once, before the first test starts so no
test timeout covers the build. Without any of these the tests skip, except under
``CI=true``, where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hangguard.tracing import SpanEventRecord, SpanRecord

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "collector"
SEED_APP = Path(__file__).with_name("seed_app.py")

#: How long a process may take to report healthy, and a trace to show up in Jaeger.
READY_TIMEOUT = 30.0
TRACE_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


# -- finding (or building) the binary -------------------------------------------------------


def _cache_dir() -> Path:
    root = os.environ.get("HANGGUARD_CACHE_DIR") or str(Path.home() / ".cache" / "hangguard")
    return Path(root) / "jaeger"


def _runs(path: Path) -> bool:
    try:
        proc = subprocess.run([str(path), "--help"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def locate_jaeger() -> tuple[Path | None, str]:
    """The binary, or ``None`` and why not."""
    explicit = os.environ.get("HANGGUARD_JAEGER_BIN", "").strip()
    if explicit:
        path = Path(explicit)
        if _runs(path):
            return path, ""
        return None, f"HANGGUARD_JAEGER_BIN={explicit} is not a working Jaeger binary"
    # The pinned release first (jaeger-v2.*), then the fallback the build script makes.
    cached = sorted(_cache_dir().glob("jaeger-v2.*")) + sorted(_cache_dir().glob("jaeger-v1.*"))
    for path in cached:
        if _runs(path):
            return path, ""
    # Never built here: a build takes minutes with no output inside a test run. It is a
    # separate step that prints its progress (.ci/run runs it before the tests).
    return None, (
        f"no Jaeger binary cached in {_cache_dir()}; run `bash scripts/build-jaeger.sh` "
        "(needs Go) or set HANGGUARD_JAEGER_BIN"
    )


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all held open at once, so none is handed out twice."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    try:
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        # Closed here: the error holds the response, and 3.14 warns (ResourceWarning, an
        # error in this suite) when that is left to garbage collection.
        with exc:
            return exc.code, exc.read()


@dataclass
class Proc:
    """One running Jaeger binary, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, limit: int = 20_000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return text[-limit:]


procs: list[Proc] = []


def ready(health: str, port: int | None) -> bool:
    """``health`` answers 200 and, when given, ``port`` on 127.0.0.1 accepts connections."""
    try:
        if http_get(health, timeout=1.0)[0] != 200:
            return False
        if port is not None:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def start(
    binary: Path,
    name: str,
    config: Path,
    env: Mapping[str, str],
    health: str,
    log_dir: Path,
    *,
    port: int | None = None,
    extra_configs: list[Path] | None = None,
) -> Proc:
    """Start ``binary --config config`` (then ``--config`` each of ``extra_configs``, merged
    over it); wait until ``health`` answers 200 and ``port`` (the OTLP receiver, which starts
    after the health endpoint) accepts connections."""
    log = log_dir / f"{name}.log"
    args = [str(binary), "--config", str(config)]
    for extra in extra_configs or []:
        args += ["--config", str(extra)]
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    proc = Proc(name, popen, log)
    procs.append(proc)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if ready(health, port):
            return proc
        if time.monotonic() > deadline:
            proc.stop()
            pytest.fail(f"{name} not healthy after {READY_TIMEOUT:g}s:\n{proc.tail()}")
        # Waiting on the process doubles as the poll interval and notices an early exit.
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(POLL_INTERVAL)
            pytest.fail(f"{name} exited with {popen.returncode}:\n{proc.tail()}")


@dataclass
class Collector:
    proc: Proc
    grpc: str
    http: str
    telemetry: str
    prometheus: str

    def app_metric(self, name: str, service: str) -> dict[str, float]:
        """Series of ``name`` the app ``service`` sent, from the Prometheus endpoint, by
        their labels other than ``job`` and ``instance``."""
        status, body = http_get(self.prometheus)
        assert status == 200, body
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if not line.startswith(name + "{") or f'job="{service}"' not in line:
                continue
            labels, value = line.rsplit(" ", 1)
            kept = [
                kv
                for kv in labels[len(name) + 1 : -1].split(",")
                if not kv.startswith(("job=", "instance=", "otel_scope_"))
            ]
            out[",".join(kept)] = float(value)
        return out

    def tail_sampling_decisions(self) -> dict[str, float]:
        """The tail sampler's global decision counts, by ``sampled`` (from its own metrics)."""
        status, body = http_get(self.telemetry)
        assert status == 200, body
        out: dict[str, float] = {"true": 0.0, "false": 0.0}
        for line in body.decode().splitlines():
            if line.startswith("otelcol_processor_tail_sampling_global_count_traces_sampled"):
                sampled = "true" if 'sampled="true"' in line else "false"
                out[sampled] += float(line.rsplit(" ", 1)[1])
        return out


@dataclass
class Stack:
    """Jaeger plus a collector in front of it."""

    jaeger: Proc
    jaeger_grpc: str
    jaeger_http: str
    query: str
    collector: Collector
    log_dir: Path
    extra: list[Proc] = field(default_factory=list)


def collector_env(jaeger_grpc: str) -> tuple[dict[str, str], dict[str, str]]:
    ports = {k: free_port() for k in ("grpc", "http", "zpages", "prom", "telemetry")}
    env = {
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "COLLECTOR_ZPAGES_ENDPOINT": f"127.0.0.1:{ports['zpages']}",
        "COLLECTOR_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports['prom']}",
        "COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
        "COLLECTOR_TELEMETRY_PORT": str(ports["telemetry"]),
        "JAEGER_OTLP_ENDPOINT": jaeger_grpc,
        # Decide quickly, and keep none of the healthy fast traces: what is kept in the
        # tests is kept by a policy, not by chance.
        "TAIL_SAMPLING_DECISION_WAIT": "1s",
        "TAIL_SAMPLING_PERCENT": "0",
    }
    urls = {
        "grpc": f"http://127.0.0.1:{ports['grpc']}",
        "http": f"http://127.0.0.1:{ports['http']}",
        "health": f"http://127.0.0.1:{ports['zpages']}/debug/servicez",
        "telemetry": f"http://127.0.0.1:{ports['telemetry']}/metrics",
        "prometheus": f"http://127.0.0.1:{ports['prom']}/metrics",
    }
    return env, urls


def start_collector(binary: Path, jaeger_grpc: str, log_dir: Path, name: str) -> Collector:
    env, urls = collector_env(jaeger_grpc)
    grpc_port = int(urls["grpc"].rsplit(":", 1)[1])
    config = COLLECTOR_DIR / "otel-collector.yaml"
    proc = start(binary, name, config, env, urls["health"], log_dir, port=grpc_port)
    return Collector(proc, urls["grpc"], urls["http"], urls["telemetry"], urls["prometheus"])


# -- the application under test -------------------------------------------------------------


@dataclass
class AppRun:
    """What one run of seed_app.py reported, and how long its exit took."""

    report: dict[str, Any]
    exit_seconds: float
    stderr: str


def run_app(env: Mapping[str, str], *args: str, timeout: float = 60) -> AppRun:
    """Run seed_app.py in a fresh interpreter; time from its ``EXITING`` line to its end."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("HANGGUARD_TRACE_FILE", None)
    report: dict[str, Any] | None = None
    exiting = math.nan
    with (
        tempfile.TemporaryFile("w+") as errfile,
        subprocess.Popen(
            [sys.executable, str(SEED_APP), *args],
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=errfile,
            text=True,
        ) as popen,
    ):
        assert popen.stdout is not None
        for line in popen.stdout:
            if line.startswith("{"):
                report = json.loads(line)
            elif line.startswith("EXITING"):
                exiting = time.monotonic()
        popen.wait(timeout)
        ended = time.monotonic()
        errfile.seek(0)
        stderr = errfile.read()
    assert popen.returncode == 0, stderr
    assert report is not None and not math.isnan(exiting), stderr
    return AppRun(report, ended - exiting, stderr)


# -- reading traces back from Jaeger --------------------------------------------------------


def _value(v: Mapping[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])  # int64 travels as a JSON string
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        return tuple(_value(x) for x in v["arrayValue"].get("values", []))
    return None


def _attrs(items: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def records_from_otlp_json(data: Mapping[str, Any]) -> list[SpanRecord]:
    """Jaeger's api_v3 answer (OTLP JSON) as span records."""
    out = []
    for rs in data.get("result", {}).get("resourceSpans", []):
        resource = _attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope", {}).get("name", "")
            for sp in ss.get("spans", []):
                status = sp.get("status", {})
                code = status.get("code", 0)
                out.append(
                    SpanRecord(
                        trace_id=sp["traceId"],
                        span_id=sp["spanId"],
                        parent_span_id=sp.get("parentSpanId") or None,
                        name=sp["name"],
                        start_ns=int(sp["startTimeUnixNano"]),
                        end_ns=int(sp["endTimeUnixNano"]),
                        status=_STATUS.get(code, str(code)) if isinstance(code, int) else code,
                        status_description=status.get("message"),
                        attributes=_attrs(sp.get("attributes")),
                        events=tuple(
                            SpanEventRecord(
                                name=e["name"],
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


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_traces(query: str, service: str) -> dict[str, list[SpanRecord]]:
    """Every trace of ``service`` Jaeger holds, through ``GET /api/v3/traces``."""
    now = datetime.now(UTC)
    params = urllib.parse.urlencode(
        {
            "query.service_name": service,
            "query.start_time_min": _iso(now - timedelta(hours=1)),
            "query.start_time_max": _iso(now + timedelta(minutes=5)),
            "query.num_traces": "100",
        }
    )
    status, body = http_get(f"{query}/api/v3/traces?{params}")
    if status == 404:
        return {}
    assert status == 200, body
    traces: dict[str, list[SpanRecord]] = {}
    for rec in records_from_otlp_json(json.loads(body)):
        traces.setdefault(rec.trace_id, []).append(rec)
    return traces


def get_trace(query: str, trace_id: str) -> list[SpanRecord]:
    """One trace by id (``GET /api/v3/traces/{trace_id}``); ``[]`` while Jaeger has none."""
    status, body = http_get(f"{query}/api/v3/traces/{trace_id}")
    if status == 404:
        return []
    assert status == 200, body
    return records_from_otlp_json(json.loads(body))


def wait_for_trace(query: str, trace_id: str, spans: int) -> list[SpanRecord]:
    """Poll Jaeger (bounded) until the trace has ``spans`` spans."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    found: list[SpanRecord] = []
    while time.monotonic() < deadline:
        found = get_trace(query, trace_id)
        if len(found) >= spans:
            return found
        pause()
    names = sorted(r.name for r in found)
    pytest.fail(
        f"trace {trace_id}: {len(found)} of {spans} spans after {TRACE_TIMEOUT:g}s: {names}"
    )


def pause() -> None:
    # The poll interval of a bounded wait for another process; nothing in this process
    # could be awaited instead.
    time.sleep(POLL_INTERVAL * 4)


def render(records: list[SpanRecord]) -> str:
    """The trace as an indented tree: name, status when not UNSET, cancel reasons."""
    children: dict[str | None, list[SpanRecord]] = {}
    for r in records:
        children.setdefault(r.parent_span_id, []).append(r)

    def order(r: SpanRecord) -> int:
        return r.start_ns

    lines: list[str] = []

    def walk(r: SpanRecord, depth: int) -> None:
        label = r.name if r.status == "UNSET" else f"{r.name} [{r.status}]"
        # The span attribute every cancelled task and op carries; the event where it is
        # the only record (an MCP tool call's span).
        reason = r.attributes.get("hangguard.cancel.reason")
        reasons = (
            [str(reason)]
            if reason is not None
            else [
                str(e.attributes.get("hangguard.cancel.reason"))
                for e in r.events_named("hangguard.cancelled")
            ]
        )
        if reasons:
            label += " cancelled(" + ",".join(reasons) + ")"
        lines.append("  " * depth + label)
        for c in sorted(children.get(r.span_id, []), key=order):
            walk(c, depth + 1)

    for root in sorted(children.get(None, []), key=order):
        walk(root, 0)
    return "\n".join(lines)


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")
