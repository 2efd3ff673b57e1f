"""RemoteGroup on a real Ray: a forced cancel is confirmed (or its surviving worker
reported), off the join's path; a failure among slow tasks ends the join at once."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import pytest
import ray_tasks

from conftest import RaySession, need_ray
from hangguard import JoinTimeout, _inflight, _semconv
from timing import WIDE_MARGIN

need_ray()

from test_ray_group import pid_alive, read_pid, wait_for  # noqa: E402

from hangguard.ray import RemoteGroup, _force  # noqa: E402
from hangguard.ray._group import POLL  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")


def task_span(spans: Any, name: str) -> Any:
    def found() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name == f"task {name}"]

    (span,) = wait_for(found, f"the driver's span of {name!r} ended")
    return span


def abandoned_states() -> list[str]:
    return [r.state for r in _inflight.snapshot() if r.kind == _inflight.RAY]


def test_a_forced_cancel_is_confirmed_on_the_task_span(
    ray_session: RaySession, spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "1")
    pid_file = ray_session.shared / "confirmed.pid"
    group = RemoteGroup("confirm", timeout=1)
    group.options(name="stubborn").submit(ray_tasks.ignore_interrupts, str(pid_file))
    pid = read_pid(pid_file)
    with pytest.raises(JoinTimeout):
        group.join()
    span = task_span(spans, "stubborn")  # ended once Ray reported the task's end
    assert span.attributes[_semconv.ATTR_RAY_FORCE_CONFIRMED] is True
    assert 1 <= span.attributes[_semconv.ATTR_RAY_FORCE_ATTEMPTS] <= _force.FORCE_TRIES
    assert not [e for e in span.events if e.name == _semconv.EVENT_RAY_WORKER_SURVIVED]
    # Ray reports the task ended once it learns the worker died; the raylet reaps the
    # process on its own turn after that, so the pid can linger as a zombie for a moment.
    wait_for(lambda: not pid_alive(pid), f"the killed worker {pid} was reaped")
    wait_for(lambda: _force.pending() == 0, "nothing left to confirm")
    assert "abandoned" not in abandoned_states()


def test_a_worker_that_survives_its_kill_is_reported(
    ray_session: RaySession,
    spans: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "1")
    pid_file = ray_session.shared / "frozen.pid"
    group = RemoteGroup("survivor", timeout=1)
    group.options(name="frozen").submit(ray_tasks.ignore_interrupts, str(pid_file))
    pid = read_pid(pid_file)
    # A frozen worker (as one stuck in the kernel) answers no cancel, forced or not.
    os.kill(pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="hangguard.ray"):
            started = time.monotonic()
            with pytest.raises(JoinTimeout):
                group.join()
            # The join does not wait for the confirmation.
            assert time.monotonic() - started < 1 + 1 + WIDE_MARGIN
            span = task_span(spans, "frozen")
        assert span.attributes[_semconv.ATTR_RAY_FORCE_CONFIRMED] is False
        assert span.attributes[_semconv.ATTR_RAY_FORCE_ATTEMPTS] == _force.FORCE_TRIES
        (event,) = [e for e in span.events if e.name == _semconv.EVENT_RAY_WORKER_SURVIVED]
        assert event.attributes[_semconv.ATTR_TASK_NAME] == "frozen"
        (warning,) = [r for r in caplog.records if "still running" in r.getMessage()]
        assert "'frozen'" in warning.getMessage() and "node" in warning.getMessage()
        assert pid_alive(pid)
        assert _inflight.IGNORING_CANCEL in abandoned_states()
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _force.pending() == 0, "the survivor's end seen")
    assert _inflight.IGNORING_CANCEL not in abandoned_states()


def test_a_failure_among_slow_tasks_ends_the_join_at_once() -> None:
    group = RemoteGroup("fail among slow")
    group.submit(ray_tasks.slow, 60.0)  # the session's Ray has 2 CPUs: both run at once
    group.submit(ray_tasks.fail_at_stamp, 1.0)
    with pytest.raises(RuntimeError, match="failed at") as caught:
        group.join(timeout=120)
    ended = time.time()
    failed_at = float(str(caught.value).rsplit("failed at ", 1)[1].split()[0])
    # Within one poll of the failure (plus the wide margin): not after the slow ones.
    assert 0 <= ended - failed_at < POLL + WIDE_MARGIN
