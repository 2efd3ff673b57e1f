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
