"""End to end: a hang cut short by ``kill -9`` still shows in Jaeger (the live snapshot,
through the collector's tail sampling), and one ended by SIGTERM shows as terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from jaeger_helpers import TRACE_TIMEOUT, Stack, find_traces, pause

from hangguard import _ps

pytestmark = pytest.mark.e2e

HANG_APP = Path(__file__).resolve().parents[1] / "hang_app.py"


def start(stack: Stack, service: str, env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HANGGUARD_"))}
    clean.update({"OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.grpc, **env})
    proc = subprocess.Popen(
        [sys.executable, str(HANG_APP), "sleep", service],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def wait_for_span(stack: Stack, service: str, name: str) -> dict[str, object]:
    deadline = time.monotonic() + TRACE_TIMEOUT
    while time.monotonic() < deadline:
        for records in find_traces(stack.query, service).values():
            for r in records:
                if r.name == name:
                    return dict(r.attributes)
        pause()
    pytest.fail(f"no span {name!r} of {service} in Jaeger after {TRACE_TIMEOUT:g}s")


def test_a_hang_killed_with_sigkill_leaves_its_snapshot_in_jaeger(stack: Stack) -> None:
    service = f"inflight-kill-{uuid.uuid4().hex[:8]}"
    proc = start(stack, service, {"HANGGUARD_SNAPSHOT_AFTER": "0.5s"})
    try:
        deadline = time.monotonic() + TRACE_TIMEOUT
        while _ps.query(proc.pid, timeout=10)["snapshots"]["sent"] < 1:
            assert time.monotonic() < deadline, "no snapshot sent"
        proc.kill()  # SIGKILL: no span of the process ever ends
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    attrs = wait_for_span(stack, service, "snapshot BlockedOp")
    assert attrs["hangguard.snapshot.kind"] == "op"
    assert "time.sleep(600)" in str(attrs["hangguard.snapshot.stack"])

    # hangguard trace --jaeger draws it under a line for the op that never ended.
    shown = subprocess.run(
        [sys.executable, "-m", "hangguard", "trace", "--jaeger", stack.query, "--service", service],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    (open_line,) = [i for i, x in enumerate(lines) if "op BlockedOp  still open" in x]
    assert "snapshot #1  running for" in lines[open_line + 1]
    assert "in blocked: time.sleep(600)" in lines[open_line + 2]


def test_a_hang_ended_by_sigterm_shows_as_terminated(stack: Stack) -> None:
    service = f"inflight-term-{uuid.uuid4().hex[:8]}"
    proc = start(stack, service, {"HANGGUARD_SNAPSHOT_AFTER": "none"})
    try:
        # READY is printed just before the sleep: wait until ps shows the sleep itself.
        deadline = time.monotonic() + TRACE_TIMEOUT
        while not any(
            f["source"].startswith("time.sleep(600)")
            for e in _ps.query(proc.pid, timeout=10)["entries"]
            for f in e["stack"]
        ):
            assert time.monotonic() < deadline, "ps never showed the sleep"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    attrs = wait_for_span(stack, service, "BlockedOp")
    assert attrs["hangguard.cancel.reason"] == "terminated"
    assert "time.sleep(600)" in str(attrs["hangguard.terminated.stack"])
