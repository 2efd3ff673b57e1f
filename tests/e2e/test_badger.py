"""End to end: Jaeger on Badger (collector/jaeger-badger.yaml) keeps a trace across a
restart on the same data directory, every span and event of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from jaeger_helpers import (
    COLLECTOR_DIR,
    Proc,
    free_ports,
    get_trace,
    render,
    run_app,
    start,
    wait_for_trace,
)
from test_jaeger import ERRORED_SPANS, ERRORED_TREE, service_name

from hangguard.tracing import SpanRecord

pytestmark = pytest.mark.e2e


def start_badger_jaeger(binary: Path, data: Path, log_dir: Path) -> tuple[Proc, str, str]:
    """Jaeger with Badger storage in ``data``: its process, OTLP/gRPC URL and query URL.

    A port picked free can be taken by another process before Jaeger binds it: then it is
    started again on new ports (three tries).
    """
    for attempt in range(3):
        try:
            return _start_badger_jaeger(binary, data, log_dir)
        except pytest.fail.Exception as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_badger_jaeger(binary: Path, data: Path, log_dir: Path) -> tuple[Proc, str, str]:
    names = ("grpc", "http", "query", "qgrpc", "health", "telemetry")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{ports['query']}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{ports['qgrpc']}",
        "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "JAEGER_TELEMETRY_HOST": "127.0.0.1",
        "JAEGER_TELEMETRY_PORT": str(ports["telemetry"]),
        "JAEGER_BADGER_DIR": str(data),
        "JAEGER_BADGER_TTL": "1h",
    }
    health = f"http://127.0.0.1:{ports['health']}/status"
    config = COLLECTOR_DIR / "jaeger-badger.yaml"
    proc = start(binary, "jaeger-badger", config, env, health, log_dir, port=ports["grpc"])
    return proc, f"http://127.0.0.1:{ports['grpc']}", f"http://127.0.0.1:{ports['query']}"


def content(records: list[SpanRecord]) -> list[tuple[object, ...]]:
    """Everything of a trace that storage must keep, in a stable order."""
    return sorted(
        (
            r.span_id,
            r.parent_span_id,
            r.name,
            r.start_ns,
            r.end_ns,
            r.status,
            tuple(sorted((k, repr(v)) for k, v in r.attributes.items())),
            tuple(
                (
                    e.name,
                    e.timestamp_ns,
                    tuple(sorted((k, repr(v)) for k, v in e.attributes.items())),
                )
                for e in r.events
            ),
        )
        for r in records
    )


def test_a_trace_outlives_a_jaeger_restart_on_the_same_badger_directory(
    jaeger_bin: Path, tmp_path: Path
) -> None:
    data = tmp_path / "badger"
    jaeger, grpc, query = start_badger_jaeger(jaeger_bin, data, tmp_path)
    try:
        service = service_name()
        run = run_app(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc, "OTEL_SERVICE_NAME": service}, "--shutdown"
        )
        assert run.report["shutdown_ok"] is True, run.stderr
        trace_id = run.report["errored_trace"]
        before = wait_for_trace(query, trace_id, ERRORED_SPANS)
        assert render(before) == ERRORED_TREE
        events = sum(len(r.events) for r in before)
        assert events >= 5, "the errored scenario records cancellations, a retry, failures"
    finally:
        jaeger.stop()
    assert jaeger.popen.returncode == 0, jaeger.tail()
    assert any(data.rglob("*.vlog")), "Badger wrote nothing to its directory"

    again, _, query = start_badger_jaeger(jaeger_bin, data, tmp_path)
    try:
        # Straight away, no waiting: the trace is read from disk or not at all.
        after = get_trace(query, trace_id)
        assert render(after) == ERRORED_TREE
        assert content(after) == content(before)
    finally:
        again.stop()
