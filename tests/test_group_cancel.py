"""TaskGroup under compound cancellation: a second cancel, strict mode, misuse, Ctrl-C.

Every test here checks the group's promise: when join ends, its tasks have ended (or were
reported as ignoring their cancellation), every span is ended, and each cancellation
reaches a task once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import GuardedOpMixin, JoinTimeout, TaskGroup

#: Cleanup a cancelled task needs: well inside the grace below, so it always finishes.
CLEANUP = 0.3
#: The cancel grace of these tests: wide, so that "waited for the cleanup" never races it.
GRACE = "10"


@pytest.fixture(autouse=True)
def _wide_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", GRACE)


class Cleaners:
    """Tasks that hang until cancelled, then need ``CLEANUP`` seconds of async cleanup.

    ``cut`` counts cleanups that a further cancellation cut short.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.cleaning = 0
        self.all_cleaning = asyncio.Event()
        self.cut = 0

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.cleaning += 1
            if self.cleaning == self.n:
                self.all_cleaning.set()
            try:
                await asyncio.sleep(CLEANUP)
            except asyncio.CancelledError:
                self.cut += 1
                raise


async def fail_now() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


async def fail_when(event: asyncio.Event) -> None:
    await event.wait()
    raise ValueError("boom")


# -- a second cancellation during the grace ------------------------------------------------


async def test_enclosing_deadline_during_the_grace_waits_for_the_cleanup() -> None:
    c = Cleaners(3)
    g = TaskGroup("g")
    tasks = [g.submit(c.run) for _ in range(3)]
    with pytest.raises(JoinTimeout) as info:
        async with hangguard.deadline(0.15, name="outer"):
            await g.join(timeout=0.05)
    assert info.value.deadline_name == "join g"  # the first cancellation's reason stands
    assert all(t.done() for t in tasks)
    assert c.cut == 0


async def test_enclosing_deadline_during_a_failures_grace_waits_for_the_cleanup() -> None:
    c = Cleaners(3)
    g = TaskGroup("g")
    tasks = [g.submit(c.run) for _ in range(3)]
    g.submit(fail_now)
    with pytest.raises(ValueError, match="boom"):
        async with hangguard.deadline(0.15, name="outer"):
            await g.join()
    assert all(t.done() for t in tasks)
    assert c.cut == 0


async def test_joiner_cancelled_twice_waits_out_the_grace_then_is_cancelled() -> None:
    c = Cleaners(3)
    g = TaskGroup("g")
    tasks = [g.submit(c.run) for _ in range(3)]
    joiner = asyncio.create_task(g.join())
    await asyncio.sleep(0)
    joiner.cancel()
    await c.all_cleaning.wait()
    joiner.cancel()  # the second cancellation, during the grace
    with pytest.raises(asyncio.CancelledError):
        await joiner
    assert all(t.done() for t in tasks)
    assert c.cut == 0


async def test_the_grace_counts_from_the_first_cancellation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.2")
    released = asyncio.Event()

    async def ignores_it() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                pass

    g = TaskGroup("g")
    stubborn = g.submit_named("stubborn", ignores_it)
    joiner = asyncio.create_task(g.join())
    await asyncio.sleep(0)
    joiner.cancel()
    # Cancelled again every 50 ms: were the grace to start over, the join would never end.
    for _ in range(200):
        await asyncio.sleep(0.05)
        if joiner.done():
            break
        joiner.cancel()
    assert joiner.done(), "the join kept waiting: each cancellation restarted the grace"
    with pytest.raises(asyncio.CancelledError):
        await joiner
    assert not stubborn.done()
    assert any("stubborn" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    released.set()
    await stubborn


async def test_group_span_ends_when_its_deadline_fired_and_the_joiner_is_cancelled_again(
    spans: InMemorySpanExporter,
) -> None:
    c = Cleaners(1)
    g = TaskGroup("g")
    task = g.submit(c.run)

    async def joins() -> None:
        async with hangguard.deadline(0.05, name="op"):
            await g.join()

    joiner = asyncio.create_task(joins())
    await c.all_cleaning.wait()  # the deadline fired: join is in its grace
    joiner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await joiner
    assert task.done()
    assert "group g" in [s.name for s in spans.get_finished_spans()]


# -- strict mode: one cancel per task ------------------------------------------------------


async def test_strict_mode_cancels_each_sibling_once() -> None:
    c = Cleaners(3)
    g = TaskGroup("g", return_exceptions=False)
    tasks = [g.submit(c.run) for _ in range(3)]
    g.submit(fail_now)
    with pytest.raises(ValueError, match="boom"):
        await g.join()
    assert all(t.done() for t in tasks)
    assert c.cut == 0


async def test_strict_mode_leaves_no_grandchild_running() -> None:
    c = Cleaners(1)
    go = asyncio.Event()
    grandchildren: list[asyncio.Task[Any]] = []

    async def nested() -> None:
        inner = TaskGroup("inner")
        grandchildren.append(inner.submit(c.run))
        go.set()
        await inner.join()

    outer = TaskGroup("outer", return_exceptions=False)
    outer.submit(nested)
    outer.submit(fail_when, go)
    with pytest.raises(ValueError, match="boom"):
        await outer.join()
    assert all(t.done() for t in grandchildren)
    assert c.cut == 0


# -- the fail-fast warning -----------------------------------------------------------------


def cancel_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hangguard" and r.levelno == logging.WARNING and "cancelling" in r.getMessage()
    ]


async def test_fail_fast_warning_when_the_failure_comes_before_join(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "1")
    g = TaskGroup("g", return_exceptions=False)
    siblings = [g.submit(asyncio.sleep, 60) for _ in range(2)]
    failing = g.submit_named("bad", fail_now)
    await asyncio.wait([failing])
    assert all(t.cancelling() for t in siblings)
    with pytest.raises(ValueError):
        await g.join()
    assert len(cancel_warnings(caplog)) == 1
    (message,) = cancel_warnings(caplog)
    assert "'bad'" in message and "ValueError" in message and "2 remaining" in message


async def test_fail_fast_warning_when_the_failure_comes_during_join(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = TaskGroup("g")
    for _ in range(3):
        g.submit(asyncio.sleep, 60)
    g.submit_named("bad", fail_now)
    with pytest.raises(ValueError):
        await g.join()
    (message,) = cancel_warnings(caplog)
    assert "'bad'" in message and "3 remaining" in message


async def test_fail_fast_warning_under_async_with(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError):
        async with TaskGroup("g") as g:
            g.submit(asyncio.sleep, 60)
            g.submit_named("bad", fail_now)
            await asyncio.sleep(60)
    (message,) = cancel_warnings(caplog)
    assert "1 remaining" in message


# -- misuse and names ----------------------------------------------------------------------


async def test_join_from_one_of_its_own_tasks_is_an_error() -> None:
    g = TaskGroup("g")

    async def joins_its_own_group() -> None:
        await g.join()

    task = g.submit(joins_its_own_group)
    with pytest.raises(RuntimeError, match="own tasks"):
        await task
    assert await g.join(return_exceptions=True) == [task.exception()]


async def test_join_async_task_from_one_of_the_ops_own_tasks_is_an_error() -> None:
    started = asyncio.Event()
    inner_error: list[BaseException] = []

    class SelfJoiningOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            self.submit_async_task(self.joins)
            for i in range(3):
                self.submit_async_task(asyncio.sleep, 0.01, i)
            return await self.join_async_task(return_exceptions=True)

        async def joins(self) -> str:
            started.set()
            try:
                await self.join_async_task()
            except RuntimeError as exc:
                inner_error.append(exc)
                raise
            return "joined"

    results = await SelfJoiningOp().async_execute()
    assert len(results) == 4 and results[1:] == [0, 1, 2]
    assert isinstance(results[0], RuntimeError)
    assert "SelfJoiningOp" in str(inner_error[0]) and "own tasks" in str(inner_error[0])


def test_a_submit_that_raises_leaves_no_name_behind() -> None:
    # Untraced (no SDK in the child), submit calls fn itself: a bad call raises there.
    code = textwrap.dedent(
        """
        import asyncio, hangguard
        async def one(x):
            return x
        async def main():
            g = hangguard.TaskGroup("g")
            try:
                g.submit_named("first-attempt", one, 1, 2)
            except TypeError:
                pass
            else:
                raise AssertionError("the bad call did not raise at submit")
            g.submit(one, 5)
            print(g.task_name(0), await g.join())
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["one[0]", "[5]"]


async def test_submit_passes_a_name_keyword_through_to_the_function() -> None:
    async def greet(greeting: str, *, name: str) -> str:
        return f"{greeting} {name}"

    g = TaskGroup("g")
    g.submit(greet, "hi", name="ann")
    g.submit_named("second", greet, "hello", name="bob")
    assert await g.join() == ["hi ann", "hello bob"]
    assert g.task_name(0).endswith("greet[0]") and g.task_name(1) == "second"


# -- Ctrl-C with a task that ignores its cancellation --------------------------------------

_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal
    import hangguard

    # As in a terminal, even when the test runner was started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def ignores_cancellation():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    async def main():
        group = hangguard.TaskGroup("work")
        group.submit_named("stubborn", ignores_cancellation)
        print("ready", flush=True)
        await group.join()

    asyncio.run(main())
    """
)


def test_one_ctrl_c_exits_despite_a_task_that_ignores_cancellation(tmp_path: Path) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_SCRIPT)
    src = Path(hangguard.__file__).resolve().parents[1]
    env = dict(os.environ, HANGGUARD_CANCEL_GRACE="0.3", PYTHONPATH=str(src))
    env.pop("HANGGUARD_JOIN_TIMEOUT", None)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)  # grace + shutdown, with a wide margin
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert "stubborn" in stderr and "ignored cancellation" in stderr
