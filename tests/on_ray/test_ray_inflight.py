"""The worker side of a Ray task in the in-flight registry: a task stuck past
``HANGGUARD_SNAPSHOT_AFTER`` (its default, 10 s) is exported by the worker's own live
snapshot, under the worker's span of the task, while it is still running;
and ``hangguard ps`` of the worker lists it."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
import ray_tasks

import hangguard
from conftest import RaySession, need_ray
from hangguard import JoinTimeout, _ps, _semconv
from hangguard.tracing import read_span_file

need_ray()

from test_ray_group import worker_spans  # noqa: E402

from hangguard.ray import RemoteGroup  # noqa: E402


def test_a_stuck_ray_task_is_snapshotted_by_its_worker(ray_session: RaySession) -> None:
    group = RemoteGroup("stuck-snap")
    # Past the 10 s default of HANGGUARD_SNAPSHOT_AFTER, with room for a loaded machine.
    with pytest.raises(JoinTimeout), hangguard.deadline(16, name="op budget"):
        group.options(name="snapped task").submit(ray_tasks.wait_forever_in_here)
        group.join()
    (remote,) = worker_spans(ray_session, "ray task snapped task")
    snaps = [
        s for s in read_span_file(ray_session.worker_spans) if s.name == "snapshot snapped task"
    ]
    assert snaps, "the worker sent no snapshot of the stuck task"
    snap = snaps[0]
    assert snap.parent_span_id == remote.span_id and snap.trace_id == remote.trace_id
    assert snap.attributes[_semconv.ATTR_SNAPSHOT_KIND] == "ray"
    assert "in wait_forever_in_here" in snap.attributes[_semconv.ATTR_SNAPSHOT_STACK]
    assert 0 < snap.attributes[_semconv.ATTR_SNAPSHOT_BUDGET_LEFT_S] < 16


def test_ps_of_the_worker_shows_the_stuck_ray_task(ray_session: RaySession) -> None:
    pid_file = ray_session.shared / "ps-worker.pid"
    group = RemoteGroup("stuck-ps")

    async def main() -> dict[str, object]:
        # The task runs under the group; the test asks its worker meanwhile, off the loop.
        group.options(name="ps task").submit(ray_tasks.wait_forever_in_here, str(pid_file))
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the task never started"
            await asyncio.sleep(0.05)
        pid = int(pid_file.read_text())
        while True:
            doc = await asyncio.to_thread(_ps.query, pid, 10.0)
            for e in doc["entries"]:
                if e["kind"] == "ray" and any(
                    f["function"] == "wait_forever_in_here" for f in e["stack"]
                ):
                    return e
            assert time.monotonic() < deadline, f"ps never showed the task: {doc}"

    with pytest.raises(JoinTimeout), hangguard.deadline(60, name="op budget"):
        entry = asyncio.run(main())
        group.join(timeout=0.1)
    assert entry["name"] == "ps task" and entry["state"] == "running"


def test_ps_of_the_driver_lists_a_groups_ray_tasks_with_their_node(
    ray_session: RaySession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "3")
    pid_file = ray_session.shared / "driver-ps.pid"
    _ps.start()  # the driver's watcher, as setup_tracing() starts it
    seen: list[dict[str, Any]] = []  # every answer's entry for the task, in order
    groups: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        # From another thread, as `hangguard ps <driver pid>` from another shell.
        while not stop.is_set():
            doc = _ps.query(os.getpid(), timeout=10)
            by_id = {e["id"]: e for e in doc["entries"]}
            for e in doc["entries"]:
                if e["kind"] == "ray" and e["name"] == "driver task":
                    seen.append(e)
                    groups.append(by_id.get(e["parent_id"], {}))
            stop.wait(0.01)  # one look every 10 ms, not a spin

    watcher = threading.Thread(target=watch)
    try:
        group = RemoteGroup("driver-ps", timeout=0.5)
        group.options(name="driver task").submit(ray_tasks.ignore_interrupts, str(pid_file))
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the task never started"
            threading.Event().wait(0.05)  # polling for the file the task writes
        watcher.start()
        while not any(e["node"] for e in seen):
            assert time.monotonic() < deadline, f"ps never showed the task's node: {seen[-1:]}"
            threading.Event().wait(0.05)
        with pytest.raises(JoinTimeout), hangguard.deadline(60, name="op budget"):
            group.join()  # timeout, cancel (ignored for the 3 s grace), then force
        after = _ps.query(os.getpid(), timeout=10)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(60)
        _ps.stop()
    states = [e["state"] for e in seen]
    assert states[0] == "running" and "cancelling" in states, states
    assert states.index("cancelling") > states.index("running")
    if "abandoned" in states:  # killed after the grace, until Ray reports its end (brief)
        assert states.index("abandoned") > states.index("cancelling")
    with_node = next(e for e in seen if e["node"])
    assert with_node["node"] == {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": "127.0.0.1",
        "pid": int(pid_file.read_text()),
    }
    assert {
        (g.get("kind"), g.get("name")) for g in groups if g.get("name") != "abandoned ray tasks"
    } == {("group", "driver-ps")}
    assert len(with_node["trace_id"]) in (0, 32)
    # The join has ended: the group's entry is gone (an abandoned task may linger).
    assert not [e for e in after["entries"] if e["name"] == "driver-ps"]
