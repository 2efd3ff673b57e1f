"""Guarded ops whose entry point is ``async def execute`` (flowllm 0.3's ``BaseStep``), and
a deadline whose cancellation the body swallowed.

``Step`` below has the shape of flowllm 0.3's ``BaseStep``: an abstract ``async def
execute(self)`` that ``__call__`` awaits. The real class is checked in its own venv by
``tests/test_flowllm3.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from abc import ABC, abstractmethod
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hangguard
from hangguard import DeadlineExceeded, JoinTimeout
from hangguard._config import ENV_VARS
from hangguard._semconv import ATTR_CANCEL_SWALLOWED, ATTR_ERROR_TYPE, ATTR_TIMEOUT_S
from timing import WIDE_MARGIN


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.5")


async def hang() -> None:
    await asyncio.Event().wait()


class Step(ABC):
    """flowllm 0.3's BaseStep shape: ``__call__`` runs ``execute``."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {}

    @abstractmethod
    async def execute(self) -> Any:
        """Run the step."""

    async def __call__(self, **kwargs: Any) -> Any:
        self.context = dict(kwargs)
        return await self.execute()


async def search(query: str, delay: float) -> str:
    if delay < 0:
        await hang()
    await asyncio.sleep(delay)
    return f"result:{query}"


@hangguard.guarded_op
class FanOutStep(Step):
    async def execute(self) -> Any:
        for query, delay in self.context["queries"]:
            self.submit_async_task(search, query, delay)  # type: ignore[attr-defined]
        return await self.join_async_task(timeout=self.context.get("timeout"))  # type: ignore[attr-defined]


async def test_a_step_runs_in_a_span_and_a_deadline_named_after_its_class(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_BUDGETS", "FanOutStep=30")
    seen: list[float] = []

    @hangguard.guarded_op
    class Probe(Step):
        async def execute(self) -> Any:
            seen.append(hangguard.remaining())
            return "ok"

    monkeypatch.setenv("HANGGUARD_BUDGETS", "Probe=30")
    assert await Probe()() == "ok"
    assert 0 < seen[0] <= 30
    (span,) = [s for s in spans.get_finished_spans() if s.name == "Probe"]
    assert span.attributes is not None and span.attributes[ATTR_TIMEOUT_S] == 30


async def test_a_step_fans_out_through_submit_and_join() -> None:
    out = await FanOutStep()(queries=[("a", 0), ("b", 0.01)], timeout=5)
    assert out == ["result:a", "result:b"]


async def test_a_hanging_sub_task_is_bounded_by_the_env_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_BUDGETS", "FanOutStep=0.2")
    start = time.monotonic()
    with pytest.raises(JoinTimeout) as info:
        await FanOutStep()(queries=[("a", 0), ("stuck", -1), ("b", 0)])
    assert time.monotonic() - start < 0.2 + 0.5 + WIDE_MARGIN
    assert info.value.deadline_name == "FanOutStep"
    assert info.value.results[0] == "result:a" and info.value.results[2] == "result:b"
    assert isinstance(info.value.results[1], DeadlineExceeded)


def test_a_sync_execute_is_still_the_sync_side() -> None:
    @hangguard.guarded_op(budget=5)
    class SyncOp:
        def execute(self) -> str:
            return "sync"

    assert SyncOp().execute() == "sync"
    assert not inspect.iscoroutinefunction(SyncOp.execute)


def test_a_class_with_no_entry_point_is_refused_naming_execute() -> None:
    with pytest.raises(TypeError, match=r"async def execute\(\)"):

        @hangguard.guarded_op
        class Nothing:
            pass


# --- a swallowed cancellation ----------------------------------------------------------------


class SwallowingStep(Step):
    """agentscope's model call: catches CancelledError and returns an "interrupted" reply."""

    caught = 0

    async def execute(self) -> Any:
        try:
            await hang()
        except asyncio.CancelledError:
            type(self).caught += 1
            return {"content": "interrupted"}


async def test_a_deadline_whose_cancellation_was_swallowed_raises_naming_the_op(
    spans: InMemorySpanExporter,
) -> None:
    guarded = hangguard.guarded_op(budget=0.05)(type("LlmStep", (SwallowingStep,), {}))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="swallowed the cancellation") as info:
        await guarded()()
    assert guarded.caught == 1  # the body did catch it and return
    assert "'LlmStep'" in str(info.value)
    assert info.value.deadline_name == "LlmStep" and info.value.budget == 0.05
    assert time.monotonic() - start < 0.05 + WIDE_MARGIN
    # The task is not left cancelled: the code after the op runs on.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)
    (span,) = [s for s in spans.get_finished_spans() if s.name == "LlmStep"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[ATTR_CANCEL_SWALLOWED] is True
    assert str(span.attributes[ATTR_ERROR_TYPE]).endswith("DeadlineExceeded")


async def test_an_outer_deadline_swallowed_in_the_op_names_that_deadline() -> None:
    guarded = hangguard.guarded_op(budget=30)(type("Inner", (SwallowingStep,), {}))
    with pytest.raises(DeadlineExceeded) as info:
        async with hangguard.deadline(0.05, name="request"):
            await guarded()()
    assert info.value.deadline_name == "request"
    assert "'Inner'" in str(info.value)


async def test_an_outside_cancel_swallowed_is_not_turned_into_a_deadline() -> None:
    guarded = hangguard.guarded_op(budget=30)(type("Outside", (SwallowingStep,), {}))
    task = asyncio.get_running_loop().create_task(guarded()())
    await asyncio.sleep(0)
    task.cancel()
    # No deadline fired: what the body returned stands (asyncio's semantics).
    assert await task == {"content": "interrupted"}


async def test_a_step_that_finishes_in_time_is_unchanged() -> None:
    @hangguard.guarded_op(budget=30)
    class Quick(Step):
        async def execute(self) -> Any:
            await asyncio.sleep(0)
            return "done"

    assert await Quick()() == "done"


async def test_plain_deadline_keeps_asyncio_semantics_when_the_body_swallows() -> None:
    # The documented contrast: a bare deadline does not judge a body that caught the
    # cancellation and carried on; the block ends normally, as with asyncio.timeout.
    reply = None
    async with hangguard.deadline(0.05, name="plain") as scope:
        reply = await SwallowingStep().execute()
    assert reply == {"content": "interrupted"}
    assert scope.expired
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
