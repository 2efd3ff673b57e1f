"""The reference op base class: flowllm 0.2's shape, and what guarded_op does to it."""

from __future__ import annotations

import asyncio

import pytest

import hangguard
from hangguard.testing import BaseAsyncOp


class EchoOp(BaseAsyncOp):
    async def async_execute(self) -> str:
        return str(self.context.query)


class FanOp(BaseAsyncOp):
    async def async_execute(self) -> list[str]:
        for q in self.context.queries:
            self.submit_async_task(self.ops[0].copy().async_call, query=q)
        return await self.join_async_task()


async def test_async_call_puts_the_arguments_in_the_context() -> None:
    assert await EchoOp().async_call(query="hi") == "hi"
    with pytest.raises(AttributeError):
        _ = EchoOp().context.missing


async def test_copy_builds_a_fresh_op_with_copies_of_its_sub_ops() -> None:
    op = FanOp(ops=[EchoOp(name="echo")])
    twin = op.copy()
    assert twin is not op and twin.ops[0] is not op.ops[0]
    assert twin.ops[0].name == "echo"


async def test_join_flattens_lists_and_drops_falsy_results() -> None:
    class ListOp(BaseAsyncOp):
        async def async_execute(self) -> object:
            return self.context.value

    op = BaseAsyncOp()
    for value in ([1, 2], 0, "", None, 3):
        op.submit_async_task(ListOp().async_call, value=value)
    assert await op.join_async_task() == [1, 2, 3]


async def test_guarded_op_bounds_the_reference_ops_join() -> None:
    never = asyncio.Event()

    class HangOp(BaseAsyncOp):
        async def async_execute(self) -> None:
            await never.wait()

    class Outer(BaseAsyncOp):
        async def async_execute(self) -> list[object]:
            self.submit_async_task(HangOp().async_call)
            return await self.join_async_task(timeout=0.05, return_exceptions=True)

    Guarded = hangguard.guarded_op(Outer)
    with pytest.raises(hangguard.JoinTimeout):
        await Guarded().async_call()


class FlakySearchOp(BaseAsyncOp):
    async def async_execute(self) -> str:
        if self.context.query == "down":
            raise ConnectionError(f"search for {self.context.query!r} failed")
        return str(self.context.query)


class SearchAllOp(BaseAsyncOp):
    async def async_execute(self) -> list[str]:
        for q in self.context.queries:
            self.submit_async_task(self.ops[0].copy().async_call, query=q)
        return await self.join_async_task(return_exceptions=True)


def _tracebacks(caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]) -> list[str]:
    """The log records carrying a traceback of an ``exc_type``, by message."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.exc_info is not None and isinstance(r.exc_info[1], exc_type)
    ]


async def test_a_failure_in_a_guarded_reference_op_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Guarded = hangguard.guarded_op(budget=30)(type("SearchAllOp", (SearchAllOp,), {}))
    with caplog.at_level("DEBUG"):
        got = await Guarded(ops=[FlakySearchOp()]).async_call(queries=["a", "down", "down"])
    assert got == ["a"]
    logged = _tracebacks(caplog, ConnectionError)
    # One record per failure, from the group: it names the task and the group.
    assert logged == [
        "task 'FlakySearchOp[1]' of group 'SearchAllOp' failed with ConnectionError",
        "task 'FlakySearchOp[2]' of group 'SearchAllOp' failed with ConnectionError",
    ]


async def test_a_failure_in_an_unguarded_reference_op_is_still_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG"):
        got = await SearchAllOp(ops=[FlakySearchOp()]).async_call(queries=["down", "b"])
    assert got == ["b"]
    assert _tracebacks(caplog, ConnectionError) == ["task failed"]
