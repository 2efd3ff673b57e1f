"""The ``hangguard`` command, run as a real subprocess with its real output parsed.

The demo runs the whole stack: the chaos MCP server on 127.0.0.1, MCP calls over
streamable HTTP, the guarded op, the local span exporter. The doctor talks to real
sockets: a closed port, a socket that never answers, and small OTLP/HTTP, OTLP/gRPC and
Jaeger-API servers run by the test.
"""

from __future__ import annotations

import asyncio
import errno
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

import hangguard
from hangguard import _config
from hangguard._cli._tree import trace_tree
from hangguard._hints import local_source, pip_install
from hangguard._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_REASON,
    ATTR_ERROR_TYPE,
    ATTR_EXCEPTION_TYPE,
    ATTR_GROUP_SERIAL,
    ATTR_TASK_STACK,
    CANCEL_TIMEOUT,
    EVENT_CANCELLED,
    EVENT_RETRY,
)
from hangguard.tracing._local import to_record
from hangguard.tracing._records import SpanRecord

OP = "CompanySegmentFactorOp"
# The demo's default budget is 3 s (join timeout 1.5 s), which its slow searches meet
# about three times over; the tests give it 6 s (join 3 s) so that a loaded 2-core
# machine cannot turn a slow search into a cancelled one. The process timeout is wider
# still: nothing may hang.
BUDGET = "6"
DEMO_TIMEOUT = 60


def clean_env(**extra: str) -> dict[str, str]:
    """This process's env without any HANGGUARD_* or OTEL_* value, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGGUARD_", "OTEL_"))}
    env.update(extra)
    return env


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.out)


def hangguard_cmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = DEMO_TIMEOUT
) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hangguard", *args],
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


# --- demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_json() -> Run:
    run = hangguard_cmd("demo", "--json", "--budget", BUDGET)
    assert run.rc == 0, run.err
    return run


def by_kind(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for search in doc["searches"]:
        out.setdefault(search["kind"], []).append(search)
    return out


def test_demo_json_keeps_the_partial_results(demo_json: Run) -> None:
    doc = demo_json.json()  # stdout is exactly one JSON document: progress and logs go to stderr
    assert doc["ok"] is True and doc["error"] is None
    assert doc["op"] == OP
    assert doc["budget_s"] == 6.0 and doc["budget_source"] == "--budget"
    assert doc["join_timeout_s"] == 3.0 and doc["join_timeout_source"] == "half the op's budget"
    assert doc["counts"] == {"ok": 4, "failed": 1, "cancelled": 1}
    kinds = by_kind(doc)
    assert [s["outcome"] for s in kinds["slow"]] == ["ok", "ok", "ok"]
    assert [s["value"] for s in kinds["slow"]] == ["slept 0.1s", "slept 0.2s", "slept 0.3s"]
    (fail,) = kinds["fail"]
    assert fail["outcome"] == "failed" and fail["error_type"] == "hangguard.McpCallError"
    assert "search backend rejected" in fail["error"]
    (flaky,) = kinds["flaky"]
    assert flaky["outcome"] == "ok" and flaky["value"] == "ok after 1 failure(s)"
    (hang,) = kinds["hang"]
    assert hang["outcome"] == "cancelled" and hang["error_type"] == "hangguard.DeadlineExceeded"
    assert doc["results"] == ["slept 0.1s", "slept 0.2s", "ok after 1 failure(s)", "slept 0.3s"]
    # The op ended at its join timeout, not later (plus a wide margin for a busy machine).
    assert doc["duration_s"] < doc["join_timeout_s"] + 3


def test_demo_json_events_explain_what_happened(demo_json: Run) -> None:
    doc = demo_json.json()
    assert re.fullmatch(r"[0-9a-f]{32}", doc["trace_id"])
    assert {s["trace_id"] for s in doc["spans"]} == {doc["trace_id"]}
    assert doc["jaeger_url"] is None  # nothing exported: no link

    cancels = [e for e in doc["events"] if e["name"] == EVENT_CANCELLED]
    by_group = [e for e in cancels if e["attributes"][ATTR_CANCEL_REASON] == CANCEL_TIMEOUT]
    assert len(by_group) == 1
    hung = by_group[0]
    assert hung["span"] == "task SearchOp[5]"
    assert hung["attributes"][ATTR_CANCEL_CAUSE] == OP
    assert "call_tool" in hung["attributes"][ATTR_TASK_STACK]  # where it was stuck

    (retry,) = [e for e in doc["events"] if e["name"] == EVENT_RETRY]
    assert retry["attributes"][ATTR_EXCEPTION_TYPE] == "hangguard.McpToolError"
    assert retry["attributes"]["hangguard.retry.attempt"] == 1

    failed_tasks = [
        s for s in doc["spans"] if s["name"].startswith("task ") and s["status"] == "ERROR"
    ]
    assert [s["name"] for s in failed_tasks] == ["task SearchOp[1]"]
    assert failed_tasks[0]["attributes"][ATTR_ERROR_TYPE] == "hangguard.McpCallError"


def test_demo_prints_the_trace_as_a_tree() -> None:
    run = hangguard_cmd("demo", env=clean_env(HANGGUARD_DEFAULT_BUDGET=BUDGET))
    assert run.rc == 0, run.err
    lines = run.out.splitlines()

    def index(fragment: str) -> int:
        found = [i for i, line in enumerate(lines) if fragment in line]
        assert found, f"no line with {fragment!r} in:\n{run.out}"
        return found[0]

    assert index(f"{OP}: budget 6s (HANGGUARD_DEFAULT_BUDGET), join timeout 3s") == 0
    op = index(f"── {OP}  ")
    group = index(f"── group {OP}  ")
    assert op < group
    assert "timed out" in lines[group] and "6 tasks, 1 failed, 1 cancelled" in lines[group]
    hung = index("── task SearchOp[5]")
    assert "cancelled (timeout)" in lines[hung]
    cause = index(f"hangguard.cancelled reason=timeout cause={OP}")
    stuck = index("stuck at ")
    assert hung < cause < stuck
    assert "ERROR McpCallError" in lines[index("── task SearchOp[1]")]
    assert index("hangguard.retry attempt 1/3 failed: McpToolError") > index("── task SearchOp[3]")
    assert index("── execute_tool hang") > hung
    # The results table precedes the tree.
    assert index("segment guidance") < op
    assert "cancelled" in lines[index("segment guidance")]
    # The mcp SDK's own spans are counted, not shown, unless --all-spans.
    assert "spans of mcp-python-sdk not shown" in run.out
    assert "MCP send" not in run.out


def test_demo_serial_runs_the_searches_one_at_a_time() -> None:
    run = hangguard_cmd(
        "demo", "--json", "--serial", "--tasks", "4", "--no-flaky", "--budget", BUDGET
    )
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["serial"] is True
    (group,) = [s for s in doc["spans"] if s["name"] == f"group {OP}"]
    assert group["attributes"][ATTR_GROUP_SERIAL] is True
    searches = sorted(
        (s for s in doc["spans"] if s["name"] == "SearchOp"), key=lambda s: s["start_ns"]
    )
    assert len(searches) == 4
    for before, after in itertools.pairwise(searches):
        assert before["end_ns"] <= after["start_ns"], "two searches overlapped in serial mode"
    assert [s["outcome"] for s in doc["searches"]] == ["ok", "failed", "ok", "cancelled"]
    # The debug mode's log of each task, in submit order, on stderr.
    started = re.findall(r"serial: task 'SearchOp\[(\d)\]' started", run.err)
    assert started == ["0", "1", "2", "3"]


def test_demo_block_loop_shows_the_blocking_frame() -> None:
    run = hangguard_cmd(
        "demo", "--json", "--block-loop", "0.4", "--tasks", "3", "--no-flaky", "--budget", BUDGET
    )
    assert run.rc == 0, run.err
    doc = run.json()
    (op,) = [s for s in doc["spans"] if s["name"] == OP]
    (event,) = [e for e in op["events"] if e["name"] == "hangguard.loop_blocked"]
    assert event["attributes"]["hangguard.loop.blocked_s"] >= 0.3
    assert event["attributes"]["hangguard.loop.stack"].splitlines()[0].endswith("in parse_report")
    assert "event loop blocked" in run.err


class _OtlpReceiver(BaseHTTPRequestHandler):
    """Answers 200 to OTLP/HTTP posts and keeps them (``server.requests``)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.path, self.headers.get("Content-Type"), body))  # type: ignore[attr-defined]
        status = self.server.status  # type: ignore[attr-defined]
        self.send_response(status)
        payload = ExportTraceServiceResponse().SerializeToString() if status == 200 else b"no"
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        body = json.dumps({"data": ["hangguard-demo"], "total": 1}).encode()
        self.send_response(200 if self.path == "/api/services" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class HttpServer:
    url: str
    requests: list[tuple[str, str | None, bytes]] = field(default_factory=list)


def serve_http(status: int = 200) -> Iterator[HttpServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpReceiver)
    server.requests = []  # type: ignore[attr-defined]
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}", server.requests)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def otlp_http() -> Iterator[HttpServer]:
    yield from serve_http(200)


@pytest.fixture
def http_404() -> Iterator[HttpServer]:
    yield from serve_http(404)


def test_demo_exports_to_the_collector_and_links_to_jaeger(otlp_http: HttpServer) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        HANGGUARD_JAEGER_UI="http://jaeger.example:16686/",
        HANGGUARD_BUDGETS=f"{OP}={BUDGET}s,SearchOp=30",
    )
    run = hangguard_cmd("demo", "--json", "--tasks", "3", "--no-flaky", env=env)
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["budget_s"] == 6.0 and doc["budget_source"] == "HANGGUARD_BUDGETS"
    assert doc["jaeger_url"] == f"http://jaeger.example:16686/trace/{doc['trace_id']}"
    assert doc["jaeger_url"] in run.err
    exported: set[str] = set()
    for path, content_type, body in otlp_http.requests:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                exported |= {s.trace_id.hex() for s in scope_spans.spans}
    assert doc["trace_id"] in exported


def test_demo_rejects_bad_input_naming_it() -> None:
    run = hangguard_cmd("demo", "--tasks", "2")
    assert run.rc == 2 and "--tasks 2" in run.err and "--no-hang" in run.err
    run = hangguard_cmd("demo", "--budget", "soon")
    assert run.rc == 2 and "--budget='soon' is not a duration" in run.err
    run = hangguard_cmd("demo", "--budget", "-1")
    assert run.rc == 2 and "--budget='-1' must be > 0" in run.err
    run = hangguard_cmd("demo", env=clean_env(HANGGUARD_DEFAULT_BUDGET="3 minutes"))
    assert run.rc == 2 and "HANGGUARD_DEFAULT_BUDGET='3 minutes'" in run.err


# --- the tree, from spans made in this process ---------------------------------------------


async def test_tree_renders_cancellation_failure_and_hidden_scopes(
    spans: InMemorySpanExporter,
) -> None:
    other = trace.get_tracer("some-transport")
    started = asyncio.Event()

    async def hangs() -> None:
        with other.start_as_current_span("transport send"):
            started.set()
            await asyncio.Event().wait()

    async def fails() -> None:
        await started.wait()
        raise ValueError("no such segment")

    group = hangguard.TaskGroup("searches", timeout=30)
    group.submit_named("hangs", hangs)
    group.submit_named("fails", fails)
    with pytest.raises(ValueError, match="no such segment"):
        await group.join()

    records = [to_record(s) for s in spans.get_finished_spans()]
    buf = io.StringIO()
    Console(file=buf, width=200).print(trace_tree(records, hide_scopes=("some-transport",)))
    text = buf.getvalue()
    assert "group searches" in text and "ERROR ValueError: no such segment" in text
    assert "task hangs" in text and "cancelled (sibling_failed)" in text
    assert "hangguard.cancelled reason=sibling_failed cause=fails" in text
    assert "stuck at " in text and "in hangs" in text
    assert "transport send" not in text and "1 spans of some-transport not shown" in text

    buf = io.StringIO()
    Console(file=buf, width=200).print(trace_tree(records))
    assert "transport send" in buf.getvalue()


async def test_tree_marks_every_cancelled_task_even_past_the_event_allowance(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_EVENTS", "1")
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.05")
    released = asyncio.Event()
    running = [asyncio.Event() for _ in range(4)]

    async def stuck(started: asyncio.Event) -> None:
        started.set()
        await asyncio.Event().wait()

    async def runs_on(started: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await released.wait()

    group = hangguard.TaskGroup("wide", timeout=30)
    for i in range(3):
        group.submit_named(f"stuck{i}", stuck, running[i])
    late = group.submit_named("runs on", runs_on, running[3])
    for event in running:
        await event.wait()
    with pytest.raises(hangguard.JoinTimeout):
        await group.join(timeout=0.01)
    released.set()
    await late

    records = [to_record(s) for s in spans.get_finished_spans()]
    buf = io.StringIO()
    Console(file=buf, width=200).print(trace_tree(records))
    lines = buf.getvalue().splitlines()
    for i in range(3):
        (line,) = [x for x in lines if f"task stuck{i} " in x]
        assert "cancelled (timeout)" in line, line
    assert sum("hangguard.cancelled reason=timeout" in x for x in lines) == 1
    (group_line,) = [x for x in lines if "group wide" in x]
    assert "4 tasks, 0 failed, 3 cancelled, 1 ignored cancellation, 1 left running" in group_line


async def test_trace_shows_a_span_file_as_a_tree(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    async def quick() -> str:
        return "done"

    async def stuck() -> None:
        await asyncio.Event().wait()

    for name in ("first", "second"):
        group = hangguard.TaskGroup(name, timeout=0.05)
        group.submit_named("quick", quick)
        group.submit_named("stuck", stuck)
        with pytest.raises(hangguard.JoinTimeout):
            await group.join()
    records = [to_record(s) for s in spans.get_finished_spans()]
    assert len({r.trace_id for r in records}) == 2
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))

    run = hangguard_cmd("trace", str(path))
    assert run.rc == 0, run.err
    assert "group second" in run.out and "group first" not in run.out  # the latest trace
    assert "cancelled (timeout)" in run.out and "reason=timeout cause=second" in run.out

    listed = hangguard_cmd("trace", str(path), "--list", "--json")
    assert [t["root"] for t in listed.json()] == ["group first", "group second"]
    first = listed.json()[0]["trace_id"]
    run = hangguard_cmd("trace", str(path), "--trace-id", first)
    assert "group first" in run.out
    # A unique prefix is enough, as with git; an empty or unknown one is an error.
    second = listed.json()[1]["trace_id"]
    prefix = next(first[:n] for n in range(1, 33) if not second.startswith(first[:n]))
    run = hangguard_cmd("trace", str(path), "--trace-id", prefix.upper())
    assert run.rc == 0 and "group first" in run.out, run.err
    missing = hangguard_cmd("trace", str(path), "--trace-id", "xyz")
    assert missing.rc == 2 and "trace xyz is not in" in missing.err

    # A process killed mid-write leaves a truncated last line: skipped, with a warning.
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:40])
    cut = hangguard_cmd("trace", str(path))
    assert cut.rc == 0 and "group second" in cut.out, cut.err
    assert f"{path}:{len(records) + 1}: skipped a truncated last line" in cut.err

    path.write_text(whole + "not json\n")
    bad = hangguard_cmd("trace", str(path))
    assert bad.rc == 2 and f"{path}:{len(records) + 1}: not a span record" in bad.err


# --- config --------------------------------------------------------------------------------


def test_config_shows_every_variable_with_its_source() -> None:
    run = hangguard_cmd("config", env=clean_env(HANGGUARD_MCP_TIMEOUT="45s"))
    assert run.rc == 0, run.err
    rows = {line.split()[0]: line.split() for line in run.out.splitlines() if line.strip()}
    for name in _config.ENV_VARS:
        assert name in rows, name
    assert rows["HANGGUARD_MCP_TIMEOUT"][1:3] == ["45s", "env"]
    assert rows["HANGGUARD_RETRY_ATTEMPTS"][1:3] == ["3", "default"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in rows
    assert "spans are kept in the process" in run.out


def test_config_json_and_per_op_budgets() -> None:
    env = clean_env(
        HANGGUARD_BUDGETS="CompanySegmentFactorOp=120,SearchOp=30s",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
    )
    run = hangguard_cmd("config", "--json", env=env)
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["ok"] is True and doc["errors"] == []
    assert doc["budgets"] == {"CompanySegmentFactorOp": 120.0, "SearchOp": 30.0}
    rows = {r["name"]: r for r in doc["hangguard"]}
    assert set(rows) == set(_config.ENV_VARS)
    assert rows["HANGGUARD_BUDGETS"]["source"] == "env"
    assert rows["HANGGUARD_DEFAULT_BUDGET"] == {
        "name": "HANGGUARD_DEFAULT_BUDGET",
        "value": 300.0,
        "raw": None,
        "source": "default",
        "default": "300",
        "description": _config.ENV_VARS["HANGGUARD_DEFAULT_BUDGET"][1],
        "error": None,
    }
    assert doc["traces"]["exporter"] == "otlp"
    assert doc["traces"]["endpoint"] == "http://collector:4317"


def test_config_fails_naming_the_bad_variable() -> None:
    env = clean_env(HANGGUARD_RETRY_ATTEMPTS="zero", HANGGUARD_SERIAL="1", HANGGUARD_BUDGT="5")
    run = hangguard_cmd("config", env=env)
    assert run.rc == 2
    assert "error: HANGGUARD_RETRY_ATTEMPTS='zero' must be a whole number >= 1" in run.err
    assert "HANGGUARD_BUDGT is set but hangguard does not read it" in run.err
    # The rest is still shown.
    assert re.search(r"HANGGUARD_SERIAL\s+on\s+env", run.out)
    doc = hangguard_cmd("config", "--json", env=env).json()
    assert doc["ok"] is False
    assert [e["name"] for e in doc["errors"]] == ["HANGGUARD_RETRY_ATTEMPTS"]


def test_config_never_calls_invalid_budgets_none_set() -> None:
    run = hangguard_cmd("config", env=clean_env(HANGGUARD_BUDGETS="SearchOp=0"))
    assert run.rc == 2
    assert "HANGGUARD_BUDGETS='SearchOp=0'" in run.err and "must be > 0" in run.err
    assert "none set" not in run.out and "invalid: see the error below" in run.out


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://host:abc"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "5s"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
    ],
)
def test_config_names_a_bad_otel_variable_and_exits_2(var: str, value: str) -> None:
    # A second bad one is reported too: each variable is checked on its own.
    env = clean_env(**{var: value, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "abc"})
    run = hangguard_cmd("config", env=env)
    assert run.rc == 2, run.out + run.err
    assert "Traceback" not in run.err
    assert f"error: {var}={value!r}" in run.err
    assert "error: OTEL_EXPORTER_OTLP_METRICS_TIMEOUT='abc'" in run.err
    doc = hangguard_cmd("config", "--json", env=env).json()
    assert doc["ok"] is False
    assert {e["name"] for e in doc["errors"]} == {var, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"}
    doctor = hangguard_cmd("doctor", "--json", env=env)
    assert doctor.rc == 1 and "Traceback" not in doctor.err
    assert any(var in c["summary"] for c in doctor.json()["checks"] if c["status"] == "fail")


# --- doctor --------------------------------------------------------------------------------


def test_doctor_fails_on_a_closed_port_and_says_how_to_fix_it(closed_port: str) -> None:
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{closed_port}")
    run = hangguard_cmd("doctor", env=env)
    assert run.rc == 1
    assert f"[FAIL] OTLP endpoint: nothing listens on {closed_port} (connection refused)" in run.out
    assert "fix: start the collector or Jaeger (docs/jaeger.md)" in run.out
    doc = hangguard_cmd("doctor", "--json", env=env).json()
    assert doc["ok"] is False
    assert [c["status"] for c in doc["checks"] if c["name"] == "OTLP endpoint"] == ["fail"]


def test_doctor_never_hangs_on_a_silent_endpoint(blackhole: str) -> None:
    run = hangguard_cmd(
        "doctor", "--endpoint", f"http://{blackhole}", "--protocol", "http/protobuf",
        "--timeout", "0.5",
    )  # fmt: skip
    assert run.rc == 1
    assert "did not answer within 0.5s" in run.out
    assert run.seconds < 0.5 + 20  # wide: interpreter start-up dominates


def test_doctor_passes_against_an_otlp_http_receiver(otlp_http: HttpServer) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http.url, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf"
    )
    run = hangguard_cmd("doctor", "--jaeger-url", otlp_http.url, env=env)
    assert run.rc == 0, run.out + run.err
    assert f"[  ok] OTLP endpoint: {otlp_http.url}/v1/traces accepts OTLP/HTTP" in run.out
    assert "[  ok] Jaeger query" in run.out and "hangguard-demo" in run.out
    assert ("/v1/traces", "application/x-protobuf", b"") in otlp_http.requests
    assert "opentelemetry-api" in run.out and "mcp" in run.out


def test_doctor_names_an_http_server_that_is_not_otlp(http_404: HttpServer) -> None:
    run = hangguard_cmd(
        "doctor", "--endpoint", http_404.url, "--protocol", "http/protobuf",
        "--jaeger-url", f"{http_404.url}/nowhere",
    )  # fmt: skip
    assert run.rc == 1
    assert "answered HTTP 404, not an OTLP success" in run.out
    assert "[FAIL] Jaeger query" in run.out


class _TraceService(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls = 0

    def service(self, details: Any) -> Any:
        if details.method != "/opentelemetry.proto.collector.trace.v1.TraceService/Export":
            return None

        def export(request: ExportTraceServiceRequest, context: Any) -> Any:
            self.calls += 1
            return ExportTraceServiceResponse()

        return grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )


def test_doctor_passes_against_an_otlp_grpc_receiver() -> None:
    handler = _TraceService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
        run = hangguard_cmd("doctor", env=env)
    finally:
        server.stop(0)
    assert run.rc == 0, run.out + run.err
    assert f"[  ok] OTLP endpoint: 127.0.0.1:{port} accepts OTLP/gRPC" in run.out
    assert handler.calls == 1


def test_doctor_reports_bad_config(closed_port: str) -> None:
    run = hangguard_cmd("doctor", env=clean_env(HANGGUARD_CANCEL_GRACE="-1"))
    assert run.rc == 1
    assert "[FAIL] config: HANGGUARD_CANCEL_GRACE='-1'" in run.out


# --- the rest of the command ---------------------------------------------------------------


def test_help_of_every_subcommand_is_complete() -> None:
    top = hangguard_cmd("--help")
    assert top.rc == 0
    for command in ("demo", "config", "doctor", "trace", "chaos-mcp"):
        assert command in top.out
    expected = {
        "demo": ["--tasks", "--budget", "--join-timeout", "--hang", "--no-hang", "--fail",
                 "--flaky", "--serial", "--json", "--jaeger-ui", "HANGGUARD_BUDGETS"],
        "config": ["--json", "HANGGUARD_BUDGETS", "exits 2"],
        "doctor": ["--endpoint", "--protocol", "--jaeger-url", "--timeout", "/v1/traces"],
        "trace": ["HANGGUARD_TRACE_FILE", "--trace-id", "--list", "--json"],
        "chaos-mcp": ["usage: hangguard chaos-mcp", "--transport", "--fault", "--max-timeout"],
    }  # fmt: skip
    for command, fragments in expected.items():
        run = hangguard_cmd(command, "--help")
        assert run.rc == 0, run.err
        text = " ".join(run.out.split())
        for fragment in fragments:
            assert fragment in text, (command, fragment)


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("hangguard")
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"hangguard {hangguard.__version__}"


def test_chaos_mcp_serves_until_stopped() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hangguard", "chaos-mcp", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "listening"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/mcp", first["url"])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_without_rich_it_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from hangguard._cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert pip_install("cli") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_without_the_mcp_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['mcp_types'] = None\n"
        "from hangguard._cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert pip_install("all") in proc.stderr  # printed as is, not as markup
    assert "Traceback" not in proc.stderr


def test_doctor_says_what_a_connect_errno_means() -> None:
    from hangguard._cli._doctor import _network_failure

    target = "http://collector:4318"
    said = _network_failure(target, OSError(errno.EINVAL, "Invalid argument"), 2.0)
    assert said.startswith(target) and "not an address this machine can connect to" in said
    assert "Errno" not in said
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    assert "network unreachable" in _network_failure(target, unreachable, 2.0)


def test_config_and_doctor_check_the_trace_file_as_setup_tracing_will(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir" / "trace.jsonl"
    run = hangguard_cmd("config", env=clean_env(HANGGUARD_TRACE_FILE=str(missing_dir)))
    assert run.rc == 2
    assert "cannot be opened for appending spans: the directory" in run.err
    assert not missing_dir.parent.exists()  # looking created nothing
    doctor = hangguard_cmd("doctor", "--json", env=clean_env(HANGGUARD_TRACE_FILE=str(missing_dir)))
    assert doctor.rc == 1 and any(
        c["status"] == "fail" and "HANGGUARD_TRACE_FILE" in c["summary"]
        for c in doctor.json()["checks"]
    )


def test_config_says_when_the_trace_file_has_no_effect(closed_port: str, tmp_path: Path) -> None:
    env = clean_env(
        HANGGUARD_TRACE_FILE=str(tmp_path / "trace.jsonl"),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{closed_port}",
    )
    run = hangguard_cmd("config", env=env)
    assert run.rc == 0, run.err
    assert "HANGGUARD_TRACE_FILE has no effect: an OTLP endpoint is set" in run.err
    local = hangguard_cmd("config", env=clean_env(HANGGUARD_TRACE_FILE=str(tmp_path / "t.jsonl")))
    assert "written only by a program that calls hangguard.setup_tracing()" in local.err


def test_the_tree_shows_the_budget_in_force_and_the_own_one_only_when_it_differs() -> None:
    from hangguard._semconv import ATTR_OWN_TIMEOUT_S, ATTR_TIMEOUT_S
    from hangguard.tracing import SpanRecord

    def span(span_id: str, parent: str | None, name: str, attrs: dict[str, float]) -> SpanRecord:
        return SpanRecord(
            trace_id="a" * 32,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            start_ns=0,
            end_ns=288_000_000,
            attributes=attrs,
        )

    records = [
        span("1" * 16, None, "CompanySegmentFactorOp", {ATTR_TIMEOUT_S: 3}),
        span("2" * 16, "1" * 16, "SearchOp", {ATTR_TIMEOUT_S: 2.7, ATTR_OWN_TIMEOUT_S: 300}),
    ]
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(trace_tree(records, trace_id="a" * 32))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "CompanySegmentFactorOp  288ms  ok  [budget 3s]" in text
    assert "SearchOp  288ms  ok  [budget 2.7s, own 300s]" in text


@pytest.mark.parametrize(
    ("argv", "shows"),
    [
        ([], "usage: hangguard"),  # a usage error, exit 2
        (["--help"], "COMMAND"),
        (["config", "--help"], "usage: hangguard config"),
        (["doctor", "--help"], "--jaeger-url"),
        (["--version"], "hangguard "),
    ],
)
def test_help_needs_no_cli_extra(argv: list[str], shows: str) -> None:
    # rich is the cli extra's one package: blocked, importing any of it fails.
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from hangguard._cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == (2 if not argv else 0), proc.stderr
    assert shows in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "needs the 'cli' extra" not in proc.stderr


def _dist_with(tmp_path: Path, direct_url: dict[str, Any] | None) -> Any:
    from importlib import metadata

    info = tmp_path / "hangguard-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hangguard\nVersion: 0.0\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return metadata.PathDistribution(info)


def test_the_pip_hint_follows_how_hangguard_was_installed(tmp_path: Path) -> None:
    checkout = tmp_path / "my checkout"
    editable = {"url": checkout.as_uri(), "dir_info": {"editable": True}}
    assert local_source(_dist_with(tmp_path / "a", editable)) == (checkout, True)
    plain_dir = {"url": checkout.as_uri(), "dir_info": {}}
    assert local_source(_dist_with(tmp_path / "b", plain_dir)) == (checkout, False)
    wheel = {"url": "https://files.example/hangguard-0.0.whl", "archive_info": {}}
    assert local_source(_dist_with(tmp_path / "c", wheel)) is None
    assert local_source(_dist_with(tmp_path / "d", None)) is None  # from an index


def test_the_pip_hint_of_this_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from importlib import metadata

    source = local_source(metadata.distribution("hangguard"))
    if source is None:
        assert pip_install("cli") == "pip install 'hangguard[cli]'"
        return
    path, editable = source
    flag = "-e " if editable else ""
    monkeypatch.chdir(path)
    assert pip_install("cli") == f"pip install {flag}'.[cli]'"
    monkeypatch.chdir(tmp_path)
    assert pip_install("cli").startswith(f"pip install {flag}")
    assert str(path) in pip_install("cli")


def test_doctor_shows_what_records_work_in_flight() -> None:
    default = hangguard_cmd("doctor", env=clean_env())
    assert default.rc == 0, default.out + default.err
    line = next(ln for ln in default.out.splitlines() if "in-flight:" in ln)
    assert "HANGGUARD_PS=auto (on with setup_tracing()) (default)" in line
    assert "HANGGUARD_SNAPSHOT_AFTER=10s (default)" in line
    assert "HANGGUARD_RECORD_ON_SIGTERM=on (default)" in line
    env = clean_env(
        HANGGUARD_PS="1", HANGGUARD_SNAPSHOT_AFTER="none", HANGGUARD_RECORD_ON_SIGTERM="0"
    )
    run = hangguard_cmd("doctor", "--json", env=env)
    (check,) = [c for c in json.loads(run.out)["checks"] if c["name"] == "in-flight"]
    assert check["status"] == "info"
    for shown in ("HANGGUARD_PS=on (env)", "HANGGUARD_SNAPSHOT_AFTER=never (env)",
                  "HANGGUARD_RECORD_ON_SIGTERM=off (env)"):  # fmt: skip
        assert shown in check["summary"]
    bad = hangguard_cmd("doctor", env=clean_env(HANGGUARD_SNAPSHOT_AFTER="soon"))
    assert bad.rc == 1
    assert "[warn] in-flight:" in bad.out and "HANGGUARD_SNAPSHOT_AFTER=invalid" in bad.out


def test_config_shows_what_records_work_in_flight() -> None:
    run = hangguard_cmd("config", "--json", env=clean_env(HANGGUARD_SNAPSHOT_AFTER="30s"))
    assert run.rc == 0, run.err
    rows = {r["name"]: r for r in json.loads(run.out)["hangguard"]}
    assert (
        rows["HANGGUARD_SNAPSHOT_AFTER"]["value"],
        rows["HANGGUARD_SNAPSHOT_AFTER"]["source"],
    ) == (
        30.0,
        "env",
    )
    assert (rows["HANGGUARD_PS"]["value"], rows["HANGGUARD_PS"]["source"]) == (None, "default")
    assert rows["HANGGUARD_RECORD_ON_SIGTERM"]["value"] is True


# --- trace: live snapshots -----------------------------------------------------------------

HANG_APP = Path(__file__).with_name("hang_app.py")


def _hang_until_snapshot(trace_file: Path) -> subprocess.Popen[str]:
    """hang_app's loop blocked in time.sleep inside BlockedOp, snapshotting every 0.3 s, once
    its first snapshot is in ``trace_file`` (written by the real exporter)."""
    env = clean_env(HANGGUARD_TRACE_FILE=str(trace_file), HANGGUARD_SNAPSHOT_AFTER="0.3s")
    proc = subprocess.Popen(
        [sys.executable, str(HANG_APP), "sleep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    deadline = time.monotonic() + 60
    while '"snapshot BlockedOp"' not in (trace_file.read_text() if trace_file.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, "no snapshot was written"
        threading.Event().wait(0.05)  # polling the file the process appends to
    return proc


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_trace_shows_the_snapshots_of_a_span_its_killed_process_never_ended(
    tmp_path: Path,
) -> None:
    trace_file = tmp_path / "trace.jsonl"
    proc = _hang_until_snapshot(trace_file)
    _stop(proc, signal.SIGKILL)  # BlockedOp never ends: only its snapshots are in the file
    names = [json.loads(line)["name"] for line in trace_file.read_text().splitlines()]
    assert "BlockedOp" not in names and "snapshot BlockedOp" in names

    run = hangguard_cmd("trace", str(trace_file))
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    (open_line,) = [x for x in lines if "still open when last seen" in x]
    assert "op BlockedOp" in open_line  # the placeholder names the open span
    snaps = [i for i, x in enumerate(lines) if re.search(r"snapshot #\d+  running for ", x)]
    assert snaps and all(i > lines.index(open_line) for i in snaps)
    assert re.search(r"running for \d+\.\ds, budget left \d+(\.\d)?s", lines[snaps[0]])
    # The innermost frame, with the source line the loop is blocked on.
    stuck = lines[snaps[0] + 1]
    assert "stuck at tests/hang_app.py:" in stuck and "in blocked: time.sleep(600)" in stuck
    assert "snapshot BlockedOp" not in run.out  # drawn as snapshots, not as finished spans


def test_trace_shows_snapshots_under_the_span_sigterm_ended(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.jsonl"
    _stop(_hang_until_snapshot(trace_file), signal.SIGTERM)

    run = hangguard_cmd("trace", str(trace_file))
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    (op_line,) = [x for x in lines if re.search(r"BlockedOp  \S+  cancelled \(terminated\)", x)]
    assert "still open" not in run.out  # the parent is in the trace: no placeholder
    snaps = [i for i, x in enumerate(lines) if "snapshot #1  running for" in x]
    assert len(snaps) == 1 and snaps[0] > lines.index(op_line)
    # Drawn one level below the op.
    indent = len(op_line) - len(op_line.lstrip("│ └├─"))
    assert len(lines[snaps[0]]) - len(lines[snaps[0]].lstrip("│ └├─")) > indent
    assert "in blocked: time.sleep(600)" in lines[snaps[0] + 1]


def test_trace_tree_puts_orphans_under_one_line_for_their_missing_parent() -> None:
    def rec(span_id: str, parent: str | None, name: str, **attrs: Any) -> SpanRecord:
        return SpanRecord(
            trace_id="ab" * 16,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind="INTERNAL",
            start_ns=int(span_id, 16),
            end_ns=int(span_id, 16) + 1,
            status="UNSET",
            status_description=None,
            attributes=attrs,
            events=(),
            resource={},
            scope="hangguard",
        )

    spans = [
        rec("01", None, "root"),
        rec("02", "ff", "child of a lost span"),
        rec("03", "ff", "its sibling"),
        rec(
            "04",
            "ee",
            "snapshot stuck",
            **{
                "hangguard.snapshot.kind": "task",
                "hangguard.snapshot.name": "stuck",
                "hangguard.snapshot.state": "ignoring_cancel",
                "hangguard.snapshot.elapsed_s": 20.0,
                "hangguard.snapshot.budget_left_s": -19.5,
                "hangguard.snapshot.seq": 2,
                "hangguard.snapshot.stack": "",
            },
        ),
    ]
    buf = io.StringIO()
    Console(file=buf, width=200).print(trace_tree(spans))
    lines = buf.getvalue().splitlines()
    (lost,) = [i for i, x in enumerate(lines) if "span ff  not in this trace" in x]
    assert "child of a lost span" in lines[lost + 1] and "its sibling" in lines[lost + 2]
    (open_line,) = [i for i, x in enumerate(lines) if "task stuck  still open" in x]
    assert "snapshot #2  ignoring_cancel for 20.0s, overdue by 19.5s" in lines[open_line + 1]
    assert "no stack" in lines[open_line + 2]
