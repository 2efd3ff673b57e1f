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
    # One record per failure, from the op's own join, which received them (the group
    # handed them over without logging them); the guarded task's name is in it.
    assert logged == ["task 'FlakySearchOp[1]' failed", "task 'FlakySearchOp[2]' failed"]


class SearchOrFailOp(BaseAsyncOp):
    async def async_execute(self) -> list[str]:
        for q in self.context.queries:
            self.submit_async_task(self.ops[0].copy().async_call, query=q)
        return await self.join_async_task(return_exceptions=False)


async def test_a_raised_failure_is_not_logged_and_one_nobody_receives_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()

    class SecondFailureOp(BaseAsyncOp):
        # Fails while the group cancels it for the first failure: raised to nobody.
        async def async_execute(self) -> None:
            try:
                await gate.wait()
            finally:
                raise ConnectionError("second")

    class FirstFailureOp(BaseAsyncOp):
        async def async_execute(self) -> None:
            raise ConnectionError("first")

    class Both(BaseAsyncOp):
        async def async_execute(self) -> list[str]:
            self.submit_async_task(SecondFailureOp().async_call)
            self.submit_async_task(FirstFailureOp().async_call)
            return await self.join_async_task(return_exceptions=False)

    Guarded = hangguard.guarded_op(budget=30)(Both)
    with caplog.at_level("DEBUG"), pytest.raises(ConnectionError, match="first"):
        await Guarded().async_call()
    assert _tracebacks(caplog, ConnectionError) == [
        "task 'SecondFailureOp[0]' of group 'Both' failed with ConnectionError"
    ]


async def test_the_failures_of_a_run_that_never_joined_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoJoin(BaseAsyncOp):
        async def async_execute(self) -> str:
            self.submit_async_task(FlakySearchOp().async_call, query="down")
            return "done"

    Guarded = hangguard.guarded_op(budget=30)(NoJoin)
    with caplog.at_level("DEBUG"):
        assert await Guarded().async_call() == "done"
    assert _tracebacks(caplog, ConnectionError) == [
        "task 'FlakySearchOp[0]' of group 'NoJoin' failed with ConnectionError"
    ]


async def test_a_failure_in_an_unguarded_reference_op_is_still_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG"):
        got = await SearchAllOp(ops=[FlakySearchOp()]).async_call(queries=["down", "b"])
    assert got == ["b"]
    logged = _tracebacks(caplog, ConnectionError)
    assert len(logged) == 1 and logged[0].endswith(" failed")
