"""What differs between Python 3.11 and 3.12-3.14, emulated on the Python running here.

Python 3.12's ``asyncio.eager_task_factory`` runs a task's first step inside
``create_task``: a task may await, fail or even finish before ``create_task`` returns to
the code that submitted it. :func:`eager_task_factory` below does the same on 3.11 (on
3.12+ the standard one is used), and the key scenarios of the task group, deadlines and
guarded ops run under it, traced and untraced.

The emulation runs the coroutine's first step with the new task as the current task
(``asyncio.tasks._enter_task``: a private function of the standard library, used here in
a test only, because there is no public way to do it on 3.11), then hands the suspended
coroutine to an ordinary task. One difference from the real thing remains: a coroutine
that finishes in its first step is done only at the task's first scheduled step, not
when ``create_task`` returns; the task's outcome and the order of callbacks are the same.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

import hangguard
from hangguard import DeadlineExceeded, JoinTimeout, deadline
from hangguard._config import ENV_VARS
from timing import WIDE_MARGIN

MARGIN = WIDE_MARGIN  # each bounded thing would otherwise hang: see timing.py


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.5")


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine whose first step already ran: replays its outcome, then delegates."""

    def __init__(self, coro: Coroutine[Any, Any, Any], step: tuple[str, Any]) -> None:
        self._coro = coro
        self._step: tuple[str, Any] | None = step

    def send(self, value: Any) -> Any:
        step, self._step = self._step, None
        if step is None:
            return self._coro.send(value)
        kind, payload = step
        if kind == "yield":
            return payload
        if kind == "return":
            raise StopIteration(payload)
        raise payload

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        step, self._step = self._step, None
        if step is not None and step[0] != "yield":
            # It finished in its first step: that outcome stands, as on 3.12.
            self._step = step
            return self.send(None)
        return self._coro.throw(typ if val is None else val)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("awaited only by its task")


def _emulated_eager_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    ctx = context if context is not None else contextvars.copy_context()
    task = asyncio.Task(_Resumed(coro, ("yield", None)), loop=loop, context=ctx)
    parent = asyncio.current_task(loop)
    if parent is not None:
        asyncio.tasks._leave_task(loop, parent)
    asyncio.tasks._enter_task(loop, task)
    try:
        try:
            step: tuple[str, Any] = ("yield", ctx.run(coro.send, None))
        except StopIteration as stop:
            step = ("return", stop.value)
        except BaseException as exc:
            step = ("raise", exc)
    finally:
        asyncio.tasks._leave_task(loop, task)
        if parent is not None:
            asyncio.tasks._enter_task(loop, parent)
    wrapper = task.get_coro()
    assert isinstance(wrapper, _Resumed)
    wrapper._step = step
    return task


def eager_task_factory() -> Any:
    """The standard eager factory on 3.12+, the emulation above on 3.11."""
    return getattr(asyncio, "eager_task_factory", None) or _emulated_eager_factory


async def _with_eager_tasks() -> None:
    asyncio.get_running_loop().set_task_factory(eager_task_factory())


# --- the emulation itself -------------------------------------------------------------------


async def test_the_emulated_factory_runs_the_first_step_inside_create_task() -> None:
    await _with_eager_tasks()
    ran: list[str] = []
    release = asyncio.Event()

    async def body() -> str:
        ran.append("first step")
        assert asyncio.current_task() is not None
        await release.wait()
        ran.append("resumed")
        return "done"

    task = asyncio.get_running_loop().create_task(body())
    assert ran == ["first step"]  # before create_task returned
    release.set()
    assert await task == "done"
    assert ran == ["first step", "resumed"]


# --- the task group, deadlines and guarded ops with eager tasks ----------------------------


async def finish_at_once(value: int) -> int:
    return value  # done in the first step, inside create_task


async def fail_at_once() -> None:
    raise ValueError("failed in the first step")


async def hang() -> None:
    await asyncio.Event().wait()


async def yield_then(value: int) -> int:
    await asyncio.sleep(0)
    return value


@pytest.fixture(params=["untraced", "traced"])
def tracing(request: pytest.FixtureRequest) -> str:
    if request.param == "traced":
        request.getfixturevalue("spans")
    return str(request.param)


async def test_group_results_in_order_when_tasks_finish_inside_submit(tracing: str) -> None:
    await _with_eager_tasks()
    group = hangguard.TaskGroup("eager")
    for i in range(3):
        group.submit(finish_at_once, i)
    group.submit(yield_then, 3)
    group.submit_named("named", finish_at_once, 4)
    assert await group.join() == [0, 1, 2, 3, 4]


async def test_group_failure_in_the_first_step_cancels_the_siblings(tracing: str) -> None:
    await _with_eager_tasks()
    sibling_cancelled = asyncio.Event()

    async def sibling() -> None:
        try:
            await hang()
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    with pytest.raises(ValueError, match="first step"):
        async with hangguard.TaskGroup("eager") as group:
            group.submit(sibling)
            group.submit(fail_at_once)
    assert sibling_cancelled.is_set()


async def test_group_return_exceptions_with_a_task_failing_inside_submit(tracing: str) -> None:
    await _with_eager_tasks()
    group = hangguard.TaskGroup("eager")
    group.submit(fail_at_once)
    group.submit(finish_at_once, 1)
    first, second = await group.join(return_exceptions=True)
    assert isinstance(first, ValueError) and second == 1


async def test_group_join_timeout_with_eager_hanging_tasks(tracing: str) -> None:
    await _with_eager_tasks()
    group = hangguard.TaskGroup("eager")
    group.submit(finish_at_once, 0)
    group.submit_named("stuck", hang)
    start = time.monotonic()
    with pytest.raises(JoinTimeout) as info:
        await group.join(timeout=0.05)
    assert time.monotonic() - start < 0.05 + 0.5 + MARGIN
    assert info.value.pending == ["stuck"]
    assert info.value.results[0] == 0


async def test_deadline_entered_in_the_first_step_binds_the_eager_task(tracing: str) -> None:
    await _with_eager_tasks()

    async def bounded() -> None:
        async with deadline(0.05, name="eager-deadline"):
            await hang()

    start = time.monotonic()
    task = asyncio.get_running_loop().create_task(bounded())
    with pytest.raises(DeadlineExceeded) as info:
        await task
    assert info.value.deadline_name == "eager-deadline"
    assert time.monotonic() - start < 0.05 + MARGIN


async def test_join_under_a_deadline_with_eager_tasks(tracing: str) -> None:
    await _with_eager_tasks()
    group = hangguard.TaskGroup("eager")
    with pytest.raises(JoinTimeout):
        async with deadline(0.05, name="outer"):
            group.submit_named("stuck", hang)
            await group.join()


async def test_nested_group_joined_inside_an_eager_task(tracing: str) -> None:
    await _with_eager_tasks()

    async def inner() -> list[int]:
        group = hangguard.TaskGroup("inner")
        group.submit(finish_at_once, 1)
        group.submit(yield_then, 2)
        return await group.join()

    outer = hangguard.TaskGroup("outer")
    outer.submit(inner)
    assert await outer.join() == [[1, 2]]


async def test_guarded_op_fan_out_with_eager_tasks(tracing: str) -> None:
    await _with_eager_tasks()

    class Leaf(hangguard.GuardedOpMixin):
        async def async_execute(self, value: int) -> int:
            return value

    class FanOut(hangguard.GuardedOpMixin, budget=30):
        async def async_execute(self, values: list[int]) -> Any:
            for v in values:
                self.submit_async_task(Leaf().async_execute, v)
            return await self.join_async_task(timeout=5)

    assert await FanOut().async_execute([1, 2, 3]) == [1, 2, 3]


# --- Python 3.14: the await graph ----------------------------------------------------------


async def test_stack_of_shows_where_a_task_waits_on_another() -> None:
    from hangguard._task_info import stack_of

    started = asyncio.Event()

    async def innermost() -> None:
        started.set()
        await hang()

    async def waiter() -> None:
        # Awaits another task: the await chain of its coroutine alone stops at the task.
        await asyncio.get_running_loop().create_task(innermost())

    task = asyncio.get_running_loop().create_task(waiter())
    await started.wait()
    stack = stack_of(task)
    assert "in waiter" in stack
    if sys.version_info >= (3, 14):
        assert "in innermost" in stack  # capture_call_graph follows awaited tasks
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- Python 3.12: functions marked as coroutine functions ----------------------------------


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+")
async def test_submit_takes_a_function_marked_as_a_coroutine_function() -> None:
    import inspect

    def marked(value: int) -> Coroutine[Any, Any, int]:
        return finish_at_once(value)

    inspect.markcoroutinefunction(marked)  # type: ignore[attr-defined]
    group = hangguard.TaskGroup("marked")
    group.submit(marked, 7)
    assert await group.join() == [7]


def test_a_plain_function_is_still_refused_by_submit() -> None:
    from hangguard._task_info import is_coroutine_function

    def plain() -> None:
        return None

    assert not is_coroutine_function(plain)
    assert is_coroutine_function(finish_at_once)


# --- a CancelledError subclass from the deadline's own cancel -------------------------------


async def test_deadline_turns_a_cancelled_error_subclass_into_deadline_exceeded() -> None:
    class MyCancelled(asyncio.CancelledError):
        pass

    async def body() -> None:
        try:
            await hang()
        except asyncio.CancelledError as exc:
            raise MyCancelled(*exc.args) from None

    with pytest.raises(DeadlineExceeded):
        async with deadline(0.01, name="sub"):
            await body()
