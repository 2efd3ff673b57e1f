"""SIGTERM and the exit past hung work end the open spans with the reason and the stack:
real subprocesses (hang_app.py) writing their spans to a trace file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hangguard import _ps

HANG_APP = Path(__file__).with_name("hang_app.py")


def wait_in(pid: int, source: str) -> None:
    """Until ``hangguard ps`` shows the hang's own line: READY is printed just before it,
    and a SIGTERM between the two would record the print, not the hang."""
    for _ in range(200):
        doc = _ps.query(pid, timeout=10)
        if any(f["source"].startswith(source) for e in doc["entries"] for f in e["stack"]):
            return
    raise AssertionError(f"ps of {pid} never showed {source!r}: {doc}")


def run(
    scenario: str, trace_file: Path, *, term: bool, hang_line: str = "time.sleep(600)"
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HANGGUARD_"))}
    env["HANGGUARD_TRACE_FILE"] = str(trace_file)
    err_file = trace_file.with_suffix(".stderr")
    with err_file.open("w") as err_out:
        proc = subprocess.Popen(
            [sys.executable, str(HANG_APP), scenario],
            stdout=subprocess.PIPE,
            stderr=err_out,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        if term:
            wait_in(proc.pid, hang_line)
            proc.send_signal(signal.SIGTERM)
        # The rest is read through the same buffered stream as READY: communicate()
        # reads the pipe itself and would miss a line that arrived with READY (the
        # daemon-exit scenario prints its next line a moment after). The app writes a
        # few lines only, so waiting before reading cannot fill the pipe. Longer than the
        # app's own 60 s bound on reaching its hang, so that its message says why.
        proc.wait(timeout=90)
        out = proc.stdout.read()
        print(err_file.read_text(), file=sys.stderr)  # shown with a failure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    return proc, out


def spans(trace_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]


def attrs_of(trace_file: Path, name: str) -> dict[str, Any]:
    (span,) = [s for s in spans(trace_file) if s["name"] == name]
    attrs: dict[str, Any] = span["attributes"]
    return attrs


def test_sigterm_ends_the_blocked_op_as_terminated_then_dies_of_sigterm(tmp_path: Path) -> None:
    file = tmp_path / "spans.jsonl"
    proc, _ = run("sleep", file, term=True)
    assert proc.returncode == -signal.SIGTERM  # the default action, as without hangguard
    attrs = attrs_of(file, "BlockedOp")
    assert attrs["hangguard.cancel.reason"] == "terminated"
    assert "time.sleep(600)" in attrs["hangguard.terminated.stack"]


def test_sigterm_chains_to_the_applications_handler(tmp_path: Path) -> None:
    file = tmp_path / "spans.jsonl"
    proc, out = run("own-handler", file, term=True)
    assert "OWN HANDLER" in out and proc.returncode == 3
    assert attrs_of(file, "BlockedOp")["hangguard.cancel.reason"] == "terminated"


def test_an_exit_past_a_hung_daemon_thread_ends_its_span(tmp_path: Path) -> None:
    file = tmp_path / "spans.jsonl"
    proc, out = run("daemon-exit", file, term=False)
    assert "EXITING" in out and proc.returncode == 0
    attrs = attrs_of(file, "ReadOp")
    assert attrs["hangguard.cancel.reason"] == "abandoned_at_exit"
    assert "sock.recv(1)" in attrs["hangguard.terminated.stack"]


def test_a_task_detached_past_its_join_ends_its_span_when_the_process_exits(
    tmp_path: Path,
) -> None:
    # It ignores its cancel, so the group detaches it; asyncio.run() then closes the loop
    # under it. Its span must still end, with the reason, not vanish.
    file = tmp_path / "spans.jsonl"
    proc, out = run("detached-exit", file, term=False)
    assert "DETACHED" in out and proc.returncode == 0
    (task,) = [s for s in spans(file) if s["name"] == "StubbornTask"]
    assert task["attributes"]["hangguard.cancel.reason"] == "abandoned_at_exit"
