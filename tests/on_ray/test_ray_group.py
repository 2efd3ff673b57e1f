"""RemoteGroup on a real single-node Ray: order, failures, timeouts, cancel and force,
typed losses, retries within the budget, the budget and the trace in the worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import ray_tasks

import hangguard
from conftest import RaySession, need_ray
from hangguard import DeadlineExceeded, JoinTimeout, _semconv
from hangguard.tracing import read_span_file

need_ray()

import ray  # noqa: E402

from hangguard.ray import RemoteGroup, TaskCancelled, WorkerLost  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")

#: Generous: worker processes start slowly on a loaded 2-core machine.
MARGIN = 20.0


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy (synchronises on a condition)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"still not true after {timeout}s: {what}")
        time.sleep(0.05)


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), f"pid in {path}"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@ray.remote(num_cpus=1)
def cube(x: int) -> int:
    return x * x * x


def test_results_come_in_submit_order_for_plain_and_remote_functions() -> None:
    group = RemoteGroup("order")
    for i in range(4):
        group.submit(ray_tasks.square, i)
    group.options(name="cube 3").submit(cube, 3)
    assert group.join() == [0, 1, 4, 9, 27]
    assert group.task_name(0) == "square[0]"
    assert group.task_name(4) == "cube 3"


def test_failures_stand_in_place_and_are_logged_once_with_the_remote_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = RemoteGroup("in place")
    group.submit(ray_tasks.square, 3)
    group.submit(ray_tasks.boom, "remote boom")
    with caplog.at_level(logging.ERROR, logger="hangguard"):
        results = group.join(return_exceptions=True)
    assert results[0] == 9
    assert isinstance(results[1], ValueError)  # Ray keeps the original class
    assert "remote boom" in str(results[1])
    logged = [r for r in caplog.records if "boom[1]" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert "ray_tasks.py" in str(logged[0].exc_info[1])  # the worker's traceback


def test_first_failure_cancels_the_rest_and_is_raised(spans: Any) -> None:
    group = RemoteGroup("fail fast")
    group.submit(ray_tasks.wait_forever_in_here)
    group.submit(ray_tasks.boom, "first")
    started = time.monotonic()
    with pytest.raises(ValueError, match="first"):
        group.join(timeout=120)
    assert time.monotonic() - started < 120
    (hung,) = [s for s in spans.get_finished_spans() if s.name == "task wait_forever_in_here[0]"]
    (event,) = [e for e in hung.events if e.name == _semconv.EVENT_CANCELLED]
    assert event.attributes[_semconv.ATTR_CANCEL_REASON] == _semconv.CANCEL_SIBLING_FAILED
    assert event.attributes[_semconv.ATTR_CANCEL_CAUSE] == "boom[1]"


def test_timeout_keeps_partial_results_and_forces_a_task_that_ignores_cancel(
    ray_session: RaySession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "2")
    pid_file = ray_session.shared / "stubborn.pid"
    group = RemoteGroup("partial", timeout=3)
    ray.get(group.submit(ray_tasks.square, 5))
    group.submit(ray_tasks.ignore_interrupts, str(pid_file))
    pid = read_pid(pid_file)  # it runs
    started = time.monotonic()
    with pytest.raises(JoinTimeout) as caught:
        group.join()
    assert time.monotonic() - started < 3 + 2 + MARGIN
    err = caught.value
    assert err.results[0] == 25
    assert isinstance(err.results[1], DeadlineExceeded)
    assert err.pending == ["ignore_interrupts[1]"]
    assert err.deadline_name == "join partial"
    # force=True killed the worker process that ignored the KeyboardInterrupt.
    wait_for(lambda: not pid_alive(pid), f"worker {pid} killed")


async def test_ajoin_awaits_with_the_same_semantics() -> None:
    group = RemoteGroup("async")
    await group.submit(ray_tasks.square, 6)  # an ObjectRef is awaitable
    group.submit(ray_tasks.wait_forever_in_here)
    with pytest.raises(JoinTimeout) as caught:
        await group.ajoin(timeout=3)
    assert caught.value.results[0] == 36
    assert caught.value.pending == ["wait_forever_in_here[1]"]


async def test_cancelling_the_awaiting_task_cancels_the_remote_tasks(spans: Any) -> None:
    group = RemoteGroup("cancelled join")
    group.submit(ray_tasks.wait_forever_in_here)
    join = asyncio.ensure_future(group.ajoin(timeout=120))
    await asyncio.sleep(0)  # ajoin is waiting
    join.cancel()
    with pytest.raises(asyncio.CancelledError):
        await join
    (task,) = [s for s in spans.get_finished_spans() if s.name == "task wait_forever_in_here[0]"]
    assert [e.attributes[_semconv.ATTR_CANCEL_REASON] for e in task.events] == [
        _semconv.CANCEL_PARENT
    ]


def test_a_task_cancelled_elsewhere_is_typed(ray_session: RaySession) -> None:
    pid_file = ray_session.shared / "cancelled-elsewhere.pid"
    group = RemoteGroup("elsewhere")
    ref = group.submit(ray_tasks.wait_forever_in_here, str(pid_file))
    read_pid(pid_file)
    ray.cancel(ref)
    (result,) = group.join(timeout=60, return_exceptions=True)
    assert isinstance(result, TaskCancelled)
    assert result.task == "wait_forever_in_here[0]"
    assert isinstance(result.__cause__, ray.exceptions.RayError)


def test_a_killed_worker_is_typed_in_its_slot_and_the_rest_kept(ray_session: RaySession) -> None:
    pid_file = ray_session.shared / "killed.pid"
    group = RemoteGroup("killed")
    group.submit(ray_tasks.square, 7)
    group.options(max_retries=0).submit(ray_tasks.wait_forever_in_here, str(pid_file))
    os.kill(read_pid(pid_file), signal.SIGKILL)
    first, lost = group.join(timeout=60, return_exceptions=True)
    assert first == 49
    assert isinstance(lost, WorkerLost)
    assert lost.task == "wait_forever_in_here[1]"


def test_a_task_whose_worker_dies_is_retried(ray_session: RaySession, spans: Any) -> None:
    marker = ray_session.shared / "crash-once"
    group = RemoteGroup("retried")
    group.submit(ray_tasks.crash_once, str(marker))
    assert group.join(timeout=90) == ["second attempt"]
    (task,) = [s for s in spans.get_finished_spans() if s.name == "task crash_once[0]"]
    assert [e.name for e in task.events] == [_semconv.EVENT_RETRY]


def test_a_retry_that_cannot_finish_in_time_is_not_started(spans: Any) -> None:
    group = RemoteGroup("no time to retry")
    group.options(max_retries=5).submit(ray_tasks.crash_after, 3.0)
    with hangguard.deadline(5.5, name="op budget"):
        # The attempt takes 3 s of 5.5: another would not fit, so the loss stands.
        (result,) = group.join(return_exceptions=True)
    assert isinstance(result, WorkerLost)
    (task,) = [s for s in spans.get_finished_spans() if s.name == "task crash_after[0]"]
    assert [e.name for e in task.events] == [_semconv.EVENT_RAY_RETRY_SKIPPED, "exception"]


def test_limit_runs_them_in_turn_and_serial_logs_each(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_SERIAL", "1")
    group = RemoteGroup("serial")
    refs = [group.submit(ray_tasks.square, i) for i in range(3)]
    assert refs[0] is not None and refs[1] is None  # held back by the limit of 1
    with caplog.at_level(logging.INFO, logger="hangguard"):
        assert group.join(timeout=60) == [0, 1, 4]
    started = [r.getMessage() for r in caplog.records if "started" in r.getMessage()]
    assert started == [
        "serial: remote task 'square[1]' started (group 'serial')",
        "serial: remote task 'square[2]' started (group 'serial')",
    ]


def test_the_budget_reaches_the_worker_with_its_name() -> None:
    group = RemoteGroup("budget")
    with hangguard.deadline(60, name="op budget"):
        # The budget a task gets is what is left when it is submitted.
        group.submit(ray_tasks.budget_seen)
        group.submit(ray_tasks.budget_seen_async)
        results = group.join()
    for left, name in results:
        assert 0 < left <= 60
        assert name == "op budget"
    # No deadline anywhere: nothing is sent, the worker has none.
    plain = RemoteGroup("no budget")
    plain.submit(ray_tasks.budget_seen)
    assert plain.join() == [(float("inf"), None)]


async def test_a_nested_mcp_call_is_bounded_by_the_drivers_budget(chaos: Any) -> None:
    group = RemoteGroup("nested mcp")
    async with hangguard.deadline(15, name="driver budget"):
        # The worker keeps 8 s of it to report back (a worker may be slow to start here).
        group.submit(ray_tasks.call_hanging_tool, chaos.url, 8.0)
        (result,) = await group.ajoin()
    assert result["error"] == "DeadlineExceeded"
    assert result["seen"] <= 15
    # It stopped 8 s before the budget the worker saw, not at the client's 600 s.
    assert result["took"] < result["seen"]
    await chaos.wait_for("cancelled", "hang", timeout=30)


def worker_spans(session: RaySession, name: str, timeout: float = 60.0) -> list[Any]:
    def found() -> list[Any]:
        if not session.worker_spans.exists():
            return []
        return [s for s in read_span_file(session.worker_spans) if s.name == name]

    return list(wait_for(found, f"worker span {name!r}", timeout))


def test_one_trace_from_the_driver_through_the_worker(ray_session: RaySession, spans: Any) -> None:
    group = RemoteGroup("traced")
    group.options(name="traced square").submit(ray_tasks.square, 2)
    assert group.join(timeout=60) == [4]
    (driver,) = [s for s in spans.get_finished_spans() if s.name == "task traced square"]
    (remote,) = worker_spans(ray_session, "ray task traced square")
    assert remote.trace_id == format(driver.context.trace_id, "032x")
    assert remote.parent_span_id == format(driver.context.span_id, "016x")
    assert remote.attributes[_semconv.ATTR_RAY_NODE_ID]
    assert remote.attributes[_semconv.ATTR_RAY_WORKER_PID] != os.getpid()


def test_the_worker_records_where_the_task_was_stuck_when_its_budget_ran_out(
    ray_session: RaySession, spans: Any
) -> None:
    group = RemoteGroup("stuck")
    with pytest.raises(JoinTimeout), hangguard.deadline(4, name="op budget"):
        group.options(name="stuck task").submit(ray_tasks.wait_forever_in_here)
        group.join()
    (remote,) = worker_spans(ray_session, "ray task stuck task")
    (event,) = [e for e in remote.events if e.name == _semconv.EVENT_CANCELLED]
    assert event.attributes[_semconv.ATTR_CANCEL_REASON] == _semconv.CANCEL_DEADLINE
    assert event.attributes[_semconv.ATTR_CANCEL_CAUSE] == "op budget"
    stack = event.attributes[_semconv.ATTR_TASK_STACK]
    assert "in wait_forever_in_here" in stack.splitlines()[0]


def test_bad_arguments_are_refused_at_the_call() -> None:
    group = RemoteGroup("bad")
    with pytest.raises(ValueError, match="num_returns"):
        group.options(num_returns=2)
    with pytest.raises(ValueError, match="max_retries"):
        group.options(max_retries=-2).submit(ray_tasks.square, 1)
    with pytest.raises(TypeError, match="limit"):
        RemoteGroup("bad", limit=0.5)  # type: ignore[arg-type]
    assert group.join() == []
    with pytest.raises(RuntimeError, match="already joined"):
        group.submit(ray_tasks.square, 1)


def test_a_join_with_a_bad_timeout_leaves_the_group_joinable() -> None:
    group = RemoteGroup("joinable")
    group.submit(ray_tasks.square, 3)
    with pytest.raises(ValueError, match="timeout"):
        group.join(timeout=-1)
    assert group.join() == [9]
    with pytest.raises(RuntimeError, match="remote group 'joinable' was already joined"):
        group.join()


@pytest.mark.parametrize(("group_arg", "join_arg"), [(False, True), (None, None), (True, None)])
def test_a_remote_group_decides_its_mode_by_the_one_rule(
    group_arg: bool | None, join_arg: bool | None
) -> None:
    group = RemoteGroup("mode", return_exceptions=group_arg)
    group.submit(ray_tasks.boom, "boom")
    collects = join_arg if join_arg is not None else bool(group_arg)
    if collects:
        assert "boom" in str(group.join(return_exceptions=join_arg)[0])
    else:
        with pytest.raises(Exception, match="boom"):
            group.join(return_exceptions=join_arg)


def test_import_without_ray_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None
        try:
            import hangguard.ray
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'hangguard[ray]'" in out.stdout
