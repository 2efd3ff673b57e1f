"""``hangguard ps`` against real processes that hang: a loop blocked in ``time.sleep``, a
task ignoring its cancellation, a thread in a loopback ``recv``; and a PID that runs no
hangguard. Each target is a subprocess this test starts and stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hangguard import _ps
from timing import WIDE_MARGIN

HANG_APP = Path(__file__).with_name("hang_app.py")


class Target:
    """A hanging subprocess, stopped (killed) at the end of the test."""

    def __init__(self, scenario: str, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HANGGUARD_"))}
        clean.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, str(HANG_APP), scenario],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the hang starts (or the app died)
        if line.strip() != "READY":
            self.stop()
            pytest.fail(f"hang_app {scenario} did not start: {line!r} {self.stderr()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def target() -> Iterator[Callable[..., Target]]:
    started: list[Target] = []

    def start(scenario: str, env: dict[str, str] | None = None) -> Target:
        t = Target(scenario, env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def ps_until(pid: int, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Ask ``pid`` until its answer satisfies ``ok`` (bounded); each answer within 2 s."""
    deadline = time.monotonic() + 30
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = _ps.query(pid, timeout=2.0 + WIDE_MARGIN)
        if ok(doc):
            return doc
    pytest.fail(f"ps {pid} never showed it: {json.dumps(doc)[:2000]}")


def leaf_with(doc: dict[str, Any], source: str) -> dict[str, Any] | None:
    for e in doc["entries"]:
        if any(f["source"].startswith(source) for f in e["stack"]):
            return e
    return None


def test_ps_answers_while_the_loop_is_blocked_in_time_sleep(target: Callable[..., Target]) -> None:
    app = target("sleep")
    doc = ps_until(app.pid, lambda d: leaf_with(d, "time.sleep(600)") is not None)
    entry = leaf_with(doc, "time.sleep(600)")
    assert entry is not None
    assert (entry["kind"], entry["name"], entry["state"]) == ("op", "BlockedOp", "running")
    assert len(entry["trace_id"]) == 32 and len(entry["span_id"]) == 16
    assert 0 < entry["budget_left_s"] <= 120
    frame = entry["stack"][0]
    assert frame["function"] == "blocked" and frame["file"] == str(HANG_APP)
    assert doc["pid"] == app.pid and doc["version"] == _ps.PS_VERSION


def test_ps_shows_a_thread_stuck_in_a_loopback_recv(target: Callable[..., Target]) -> None:
    app = target("recv")
    doc = ps_until(
        app.pid, lambda d: leaf_with(d, "return sock.recv(1)  # never answers") is not None
    )
    entry = leaf_with(doc, "return sock.recv(1)  # never answers")
    assert entry is not None and entry["name"] == "ReadOp" and entry["kind"] == "op"


def test_ps_shows_a_task_that_ignores_its_cancellation_overdue(
    target: Callable[..., Target],
) -> None:
    app = target("ignore")
    doc = ps_until(
        app.pid,
        lambda d: any(e["name"] == "StubbornOp" and e["budget_left_s"] < 0 for e in d["entries"]),
    )
    (entry,) = [e for e in doc["entries"] if e["name"] == "StubbornOp"]
    assert any(f["source"] == "await asyncio.sleep(600)" for f in entry["stack"])


def test_the_cli_prints_the_tree_and_json(target: Callable[..., Target]) -> None:
    app = target("sleep")
    ps_until(app.pid, lambda d: leaf_with(d, "time.sleep(600)") is not None)
    text = subprocess.run(
        [sys.executable, "-m", "hangguard", "ps", str(app.pid)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0, text.stderr
    assert "op BlockedOp  [running]" in text.stdout
    assert "time.sleep(600)" in text.stdout and "budget left" in text.stdout
    out = subprocess.run(
        [sys.executable, "-m", "hangguard", "ps", str(app.pid), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(out.stdout)
    assert set(doc) == {"version", "pid", "python", "argv", "time", "snapshots", "entries"}
    assert set(doc["entries"][0]) == {
        "id",
        "parent_id",
        "kind",
        "name",
        "state",
        "trace_id",
        "span_id",
        "started_at",
        "elapsed_s",
        "budget_left_s",
        "thread_id",
        "stack",
        "node",
    }
    assert doc["entries"][0]["node"] is None  # runs here (a Ray task's names its node)


def test_a_pid_without_hangguard_gets_one_line_and_exit_1() -> None:
    plain = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hangguard", "ps", str(plain.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        plain.kill()
        plain.wait(30)
        assert plain.stdin is not None
        plain.stdin.close()
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0
    assert f"process {plain.pid} runs no hangguard watcher" in out.stderr


def test_a_pid_that_does_not_exist() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    with pytest.raises(_ps.PsError, match=f"no process {gone.pid}"):
        _ps.query(gone.pid)


def test_ps_off_means_no_watcher(target: Callable[..., Target]) -> None:
    app = target("sleep", {"HANGGUARD_PS": "0"})
    with pytest.raises(_ps.PsError, match="runs no hangguard watcher"):
        _ps.query(app.pid)


def test_the_socket_directory_is_private() -> None:
    mode = _ps.socket_dir().stat().st_mode & 0o777
    assert mode == 0o700


def test_hangguard_ps_1_without_tracing_starts_the_watcher_at_the_first_op(
    target: Callable[..., Target],
) -> None:
    # No setup_tracing() in the process: HANGGUARD_PS=1 alone starts the watcher.
    app = target("untraced", {"HANGGUARD_PS": "1"})
    doc = ps_until(app.pid, lambda d: leaf_with(d, "time.sleep(600)") is not None)
    entry = leaf_with(doc, "time.sleep(600)")
    assert entry is not None
    assert (entry["kind"], entry["name"], entry["state"]) == ("op", "BlockedOp", "running")
    assert entry["trace_id"] == "" and entry["span_id"] == ""  # untraced: no span ids
    assert 0 < entry["budget_left_s"] <= 120
    assert doc["snapshots"] == {"sent": 0, "capped": 0}  # no tracer: nothing to send
    out = subprocess.run(
        [sys.executable, "-m", "hangguard", "ps", str(app.pid)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "BlockedOp" in out.stdout and "time.sleep(600)" in out.stdout


def test_without_tracing_or_hangguard_ps_there_is_no_watcher(
    target: Callable[..., Target],
) -> None:
    app = target("untraced")
    with pytest.raises(_ps.PsError, match="runs no hangguard watcher"):
        _ps.query(app.pid)
