"""End to end, the other hangs: a task ignoring its cancellation and a thread in a
loopback ``recv`` killed with SIGKILL, the thread ended by SIGTERM, SIGTERM chained to the
application's handler, and a normal exit past a hung daemon thread.

Each test starts ``tests/hang_app.py`` (a real process that hangs), exported through the
collector's tail sampling (which keeps no trace by chance here) to Jaeger. Jaeger's query
API must show the hang each time, found by the trace id ``hangguard ps`` gave for the open
span (and by service). The loop blocked in ``time.sleep`` is in test_inflight_jaeger.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jaeger_helpers import TRACE_TIMEOUT, Stack, find_traces, get_trace, pause

from hangguard import _ps
from hangguard._semconv import ATTR_CANCEL_REASON, ATTR_SNAPSHOT_STACK, ATTR_TERMINATED_STACK
from hangguard.tracing import SpanRecord

pytestmark = pytest.mark.e2e

HANG_APP = Path(__file__).resolve().parent.parent / "hang_app.py"


class App:
    """``hang_app.py SCENARIO SERVICE`` exporting to the collector; killed at the end."""

    def __init__(self, stack: Stack, scenario: str, **env: str) -> None:
        self.service = f"hang-app-{uuid.uuid4().hex[:10]}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HANGGUARD_"))}
        clean.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.grpc,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                **env,
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(HANG_APP), scenario, self.service],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the hang starts (or the app died)
        if line.strip() != "READY":
            self.stop()
            pytest.fail(f"hang_app {scenario} did not start: {line!r}")

    def ps_until(self, ok: Any) -> dict[str, Any]:
        deadline = time.monotonic() + TRACE_TIMEOUT
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = _ps.query(self.proc.pid, timeout=5.0)
            if ok(doc):
                return doc
            pause()
        pytest.fail(f"ps never showed it: {doc}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def wait_for_span(query: str, trace_id: str, name: str) -> list[SpanRecord]:
    deadline = time.monotonic() + TRACE_TIMEOUT
    found: list[SpanRecord] = []
    while time.monotonic() < deadline:
        found = get_trace(query, trace_id)
        if any(r.name == name for r in found):
            return found
        pause()
    pytest.fail(f"trace {trace_id} has no {name!r} after {TRACE_TIMEOUT:g}s: {found}")


def entry_named(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    for e in doc["entries"]:
        if e["name"] == name:
            return e
    return None


def in_recv(entry: dict[str, Any] | None) -> bool:
    # Past its READY line: the thread is in the recv itself.
    return entry is not None and any(
        f["source"].startswith("return sock.recv(1)") for f in entry["stack"]
    )


def blocked_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    return entry_named(doc, "BlockedOp")


@pytest.mark.parametrize(
    ("scenario", "op", "line"),
    [
        ("ignore", "StubbornOp", "await asyncio.sleep(600)"),
        ("recv", "ReadOp", "return sock.recv(1)"),
    ],
)
def test_kill_9_during_the_hang_still_leaves_the_hang_in_jaeger(
    stack: Stack, scenario: str, op: str, line: str
) -> None:
    app = App(stack, scenario, HANGGUARD_SNAPSHOT_AFTER="0.5")
    try:
        doc = app.ps_until(lambda d: d["snapshots"]["sent"] >= 1 and entry_named(d, op))
        entry = entry_named(doc, op)
        assert entry is not None
        app.proc.send_signal(signal.SIGKILL)
        assert app.proc.wait(30) == -signal.SIGKILL
    finally:
        app.stop()
    found = wait_for_span(stack.query, entry["trace_id"], f"snapshot {op}")
    (snap, *_) = [r for r in found if r.name == f"snapshot {op}"]
    assert snap.parent_span_id == entry["span_id"]
    assert line in snap.attributes[ATTR_SNAPSHOT_STACK]
    # The op span itself never ended: a killed process ends none.
    assert all(r.name != op for r in found)
    # Found by service too.
    assert entry["trace_id"] in find_traces(stack.query, app.service)


def test_sigterm_ends_a_thread_stuck_in_recv_as_terminated(stack: Stack) -> None:
    app = App(stack, "recv", HANGGUARD_SNAPSHOT_AFTER="none")
    try:
        doc = app.ps_until(lambda d: in_recv(entry_named(d, "ReadOp")))
        entry = entry_named(doc, "ReadOp")
        assert entry is not None and doc["snapshots"]["sent"] == 0
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(30) == -signal.SIGTERM  # the default action, as without us
    finally:
        app.stop()
    found = wait_for_span(stack.query, entry["trace_id"], "ReadOp")
    (op,) = [r for r in found if r.name == "ReadOp"]
    assert op.span_id == entry["span_id"]
    assert op.attributes[ATTR_CANCEL_REASON] == "terminated"
    assert "return sock.recv(1)" in op.attributes[ATTR_TERMINATED_STACK]


def test_sigterm_chains_to_the_handler_the_application_installed(stack: Stack) -> None:
    app = App(stack, "own-handler", HANGGUARD_SNAPSHOT_AFTER="none")
    try:
        entry = blocked_entry(app.ps_until(blocked_entry))
        assert entry is not None
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(60) == 3  # the application's handler decided the exit
        assert app.proc.stdout is not None
        assert "OWN HANDLER" in app.proc.stdout.read()
    finally:
        app.stop()
    found = wait_for_span(stack.query, entry["trace_id"], "BlockedOp")
    (op,) = [r for r in found if r.name == "BlockedOp"]
    assert op.attributes[ATTR_CANCEL_REASON] == "terminated"


def test_a_normal_exit_past_a_hung_daemon_thread_ends_its_span_abandoned(stack: Stack) -> None:
    app = App(stack, "daemon-exit", HANGGUARD_SNAPSHOT_AFTER="none")
    try:
        assert app.proc.wait(60) == 0
    finally:
        app.stop()
    deadline = time.monotonic() + TRACE_TIMEOUT
    ops: list[SpanRecord] = []
    while time.monotonic() < deadline and not ops:
        ops = [r for t in find_traces(stack.query, app.service).values() for r in t]
        ops = [r for r in ops if r.name == "ReadOp"]
        if not ops:
            pause()
    assert ops, f"no ReadOp span of {app.service} in Jaeger"
    (op,) = ops
    assert op.attributes[ATTR_CANCEL_REASON] == "abandoned_at_exit"
    assert "return sock.recv(1)" in op.attributes[ATTR_TERMINATED_STACK]
