"""Guarded ops and ``traced``: spans, deadlines, per-run groups, unchanged results.

``BaseAsyncOp`` below replicates the seed's op pattern as a widespread base class writes
it (ops copied per use, ``task_list`` of asyncio tasks, a join that gathers, flattens list
results and drops falsy ones): decorated and undecorated ops must return the same.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hangguard
from hangguard import (
    ConfigError,
    DeadlineExceeded,
    GuardedOpMixin,
    JoinTimeout,
    current_deadline,
    guarded_op,
)
from hangguard._config import ENV_VARS
from hangguard._semconv import (
    ATTR_CANCEL_CAUSE,
    ATTR_CANCEL_REASON,
    ATTR_ERROR_TYPE,
    ATTR_OP_NAME,
    ATTR_TIMEOUT_S,
    CANCEL_DEADLINE,
    CANCEL_PARENT,
    EVENT_CANCELLED,
)
from timing import WIDE_MARGIN

MARGIN = WIDE_MARGIN  # each bounded thing would otherwise hang: see timing.py
logger = logging.getLogger("test_op")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.5")


async def hang() -> None:
    await asyncio.Event().wait()


# --- the seed's op pattern ---------------------------------------------------------------


class BaseAsyncOp:
    """An async op as the seed's users write them: ``ops`` copied per use, sub-tasks on
    ``task_list``, a join that gathers, flattens list results and drops falsy ones."""

    _init_args: tuple[Any, ...]
    _init_kwargs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__new__(cls)
        instance._init_args = copy.copy(args)
        instance._init_kwargs = copy.copy(kwargs)
        return instance

    def __init__(self, name: str = "", ops: list[BaseAsyncOp] | None = None) -> None:
        self.name = name or type(self).__name__
        self.ops: list[BaseAsyncOp] = ops if ops else []
        self.task_list: list[asyncio.Task[Any]] = []
        self.context: dict[str, Any] = {}

    def copy(self) -> Any:
        op = self.__class__(*self._init_args, **self._init_kwargs)
        op.ops = [o.copy() for o in self.ops]
        return op

    async def async_execute(self) -> Any:
        raise NotImplementedError

    async def async_call(self, **kwargs: Any) -> Any:
        self.context = dict(kwargs)
        return await self.async_execute()

    def submit_async_task(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        if inspect.iscoroutinefunction(fn):
            task = loop.create_task(fn(*args, **kwargs))
            self.task_list.append(task)
        else:
            logger.warning("submit_async_task failed, fn is not a coroutine function!")

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        result: list[Any] = []
        if not self.task_list:
            return result
        try:
            gathered = asyncio.gather(*self.task_list, return_exceptions=return_exceptions)
            if timeout is not None:
                task_results = await asyncio.wait_for(gathered, timeout=timeout)
            else:
                task_results = await gathered
            for t_result in task_results:
                if t_result:
                    if isinstance(t_result, list):
                        result.extend(t_result)
                    else:
                        result.append(t_result)
        except Exception:
            logger.exception("join_async_task failed, cancelling remaining tasks...")
            for task in self.task_list:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*self.task_list, return_exceptions=True)
            raise
        finally:
            self.task_list.clear()
        return result


class EchoOp(BaseAsyncOp):
    """Returns its ``value``; ``"fail"`` raises, ``"hang"`` never returns."""

    async def async_execute(self) -> Any:
        value = self.context["value"]
        await asyncio.sleep(0)
        if value == "fail":
            raise ValueError("echo failed")
        if value == "hang":
            await hang()
        return value


class FanOutOp(BaseAsyncOp):
    """The seed's scenario: one copy of ``ops[0]`` per value, then join."""

    async def async_execute(self) -> Any:
        for value in self.context["values"]:
            op = self.ops[0].copy()
            self.submit_async_task(op.async_call, value=value)
        return await self.join_async_task(**self.context.get("join", {}))


class LenientFanOutOp(FanOutOp):
    """A base whose join defaults to ``return_exceptions=True`` (as newer releases do)."""

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool = True
    ) -> list[Any]:
        return await super().join_async_task(timeout, return_exceptions)


def guarded_pair(base: type[BaseAsyncOp], child: type[BaseAsyncOp]) -> tuple[Any, Any]:
    """The same op tree twice: as written, and with every class guarded."""
    plain = base(ops=[child()])
    g_child = guarded_op(type(child.__name__, (child,), {}))
    g_base = guarded_op(type(base.__name__, (base,), {}))
    return plain, g_base(ops=[g_child()])


def shape(results: Sequence[Any]) -> list[Any]:
    """Results comparable across runs: exceptions by type and message."""
    return [(type(r).__name__, str(r)) if isinstance(r, BaseException) else r for r in results]


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def parent_of(span: ReadableSpan, exporter: InMemorySpanExporter) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (parent,) = [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.span_id == span.parent.span_id
    ]
    return parent


# --- decorated vs undecorated: the same results -------------------------------------------

MIXED = [1, 0, None, "", [2, 3], [], "x", False, [None]]


async def test_equivalence_ok_falsy_and_list_results() -> None:
    plain, guarded = guarded_pair(FanOutOp, EchoOp)
    expected = await plain.async_call(values=MIXED)
    assert expected == [1, 2, 3, "x", None]  # flattened, falsy dropped
    assert await guarded.async_call(values=MIXED) == expected
    assert guarded.task_list == []


async def test_equivalence_with_return_exceptions() -> None:
    plain, guarded = guarded_pair(FanOutOp, EchoOp)
    values = [1, "fail", [2], 0, "fail"]
    join = {"return_exceptions": True}
    expected = shape(await plain.async_call(values=values, join=join))
    assert expected == [1, ("ValueError", "echo failed"), 2, ("ValueError", "echo failed")]
    assert shape(await guarded.async_call(values=values, join=join)) == expected


async def test_equivalence_failure_raised_as_itself() -> None:
    plain, guarded = guarded_pair(FanOutOp, EchoOp)
    with pytest.raises(ValueError, match="echo failed"):
        await plain.async_call(values=[1, "fail", 2])
    with pytest.raises(ValueError, match="echo failed"):
        await guarded.async_call(values=[1, "fail", 2])
    assert guarded.task_list == []


async def test_equivalence_keeps_the_original_join_default() -> None:
    plain, guarded = guarded_pair(LenientFanOutOp, EchoOp)
    expected = shape(await plain.async_call(values=["fail", 3]))
    assert expected == [("ValueError", "echo failed"), 3]
    assert shape(await guarded.async_call(values=["fail", 3])) == expected


async def test_equivalence_empty_join() -> None:
    plain, guarded = guarded_pair(FanOutOp, EchoOp)
    assert await plain.async_call(values=[]) == []
    assert await guarded.async_call(values=[]) == []


async def test_equivalence_in_serial_debug_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_SERIAL", "1")
    plain, guarded = guarded_pair(FanOutOp, EchoOp)
    expected = await plain.async_call(values=MIXED)
    assert await guarded.async_call(values=MIXED) == expected


async def test_join_timeout_on_a_seed_op_is_a_timeout_error_with_partial_results() -> None:
    _, guarded = guarded_pair(FanOutOp, EchoOp)
    start = time.monotonic()
    with pytest.raises(asyncio.TimeoutError) as info:
        await guarded.async_call(values=[1, "hang"], join={"timeout": 0.1})
    assert time.monotonic() - start < 0.1 + MARGIN
    assert isinstance(info.value, JoinTimeout)
    assert info.value.results[0] == 1
    assert isinstance(info.value.results[1], DeadlineExceeded)
    assert info.value.pending == ["EchoOp[1]"]
    assert guarded.task_list == []


async def test_mixin_on_a_seed_op_gives_the_same_results() -> None:
    class MixinEchoOp(GuardedOpMixin, EchoOp):
        pass

    class MixinFanOutOp(GuardedOpMixin, FanOutOp):
        pass

    op = MixinFanOutOp(ops=[MixinEchoOp()])
    assert await op.async_call(values=MIXED) == [1, 2, 3, "x", None]
    got = shape(await op.async_call(values=["fail", [4]], join={"return_exceptions": True}))
    assert got == [("ValueError", "echo failed"), 4]


async def test_hand_added_tasks_still_reach_the_original_join() -> None:
    @guarded_op
    class HandOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            self.submit_async_task(asyncio.sleep, 0, result="submitted")
            # Not through submit: the original join gathered these too, so it still must.
            self.task_list.append(asyncio.create_task(asyncio.sleep(0, result="by hand")))
            return await self.join_async_task()

    assert await HandOp().async_call() == ["submitted", "by hand"]


# --- spans -------------------------------------------------------------------------------


async def test_span_tree_op_group_task_nested_op(spans: InMemorySpanExporter) -> None:
    _, guarded = guarded_pair(FanOutOp, EchoOp)
    assert await guarded.async_call(values=["a", "b"]) == ["a", "b"]

    named = by_name(spans)
    (root,) = named["FanOutOp"]
    (group,) = named["group FanOutOp"]
    tasks = named["task EchoOp[0]"] + named["task EchoOp[1]"]
    nested = named["EchoOp"]
    assert root.parent is None
    assert parent_of(group, spans) is root
    for task in tasks:
        assert parent_of(task, spans) is group
    assert len(nested) == 2
    assert {parent_of(n, spans).name for n in nested} == {"task EchoOp[0]", "task EchoOp[1]"}
    for op_span in [root, *nested]:
        assert op_span.attributes is not None
        assert op_span.attributes[ATTR_OP_NAME] == op_span.name
        assert op_span.status.status_code is StatusCode.UNSET


async def test_failure_marks_the_op_span(spans: InMemorySpanExporter) -> None:
    @guarded_op
    class BrokenOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            raise KeyError("missing")

    with pytest.raises(KeyError):
        await BrokenOp().async_call()
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[ATTR_ERROR_TYPE] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]


async def test_cancellation_is_recorded_not_an_error(spans: InMemorySpanExporter) -> None:
    entered = asyncio.Event()

    @guarded_op
    class WaitOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            entered.set()
            await hang()

    task = asyncio.create_task(WaitOp().async_call())
    await entered.wait()
    task.cancel("shutting down")
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    (event,) = span.events
    assert event.name == EVENT_CANCELLED
    assert event.attributes is not None
    assert event.attributes[ATTR_CANCEL_REASON] == CANCEL_PARENT
    assert event.attributes[ATTR_CANCEL_CAUSE] == "shutting down"


async def test_enclosing_deadline_passing_through_is_recorded_as_deadline(
    spans: InMemorySpanExporter,
) -> None:
    @guarded_op
    class WaitOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            await hang()

    async def run() -> None:
        async with hangguard.deadline(0.05, name="caller"):
            await WaitOp().async_call()

    with pytest.raises(DeadlineExceeded) as info:
        await run()
    assert info.value.deadline_name == "caller"
    (span,) = spans.get_finished_spans()
    # Not the op's failure: the caller's deadline cancelled it.
    assert span.status.status_code is StatusCode.UNSET
    (event,) = span.events
    assert event.attributes is not None
    assert event.attributes[ATTR_CANCEL_REASON] == CANCEL_DEADLINE
    assert "'caller'" in str(event.attributes[ATTR_CANCEL_CAUSE])


async def test_sibling_failure_cancels_nested_op_and_records_why(
    spans: InMemorySpanExporter,
) -> None:
    _, guarded = guarded_pair(FanOutOp, EchoOp)
    with pytest.raises(ValueError, match="echo failed"):
        await guarded.async_call(values=["hang", "fail"])
    named = by_name(spans)
    (hung,) = [s for s in named["EchoOp"] if s.events and s.events[0].name == EVENT_CANCELLED]
    attrs = hung.events[0].attributes
    assert attrs is not None
    assert attrs[ATTR_CANCEL_REASON] == CANCEL_PARENT
    assert "sibling_failed" in str(attrs[ATTR_CANCEL_CAUSE])
    assert hung.status.status_code is StatusCode.UNSET
    (root,) = named["FanOutOp"]
    assert root.status.status_code is StatusCode.ERROR


async def test_budget_is_on_the_span(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANGGUARD_BUDGETS", "EchoOp=12")
    op_cls = guarded_op(type("EchoOp", (EchoOp,), {}))
    await op_cls().async_call(value=1)
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[ATTR_TIMEOUT_S] == 12.0


# --- budgets and deadlines ---------------------------------------------------------------


class DeadlineProbeOp(BaseAsyncOp):
    """Returns the deadline in force while it runs."""

    async def async_execute(self) -> Any:
        return current_deadline()


async def test_no_budget_anywhere_means_the_finite_default_budget() -> None:
    # Nothing set: the op is still bounded, by the default op budget.
    d = await guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))().async_call()
    assert d is not None
    assert d.name == "ProbeOp"
    assert d.budget == hangguard._config.DEFAULT_OP_BUDGET
    assert not math.isinf(d.budget)


async def test_default_budget_none_still_opts_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "none")
    assert await guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))().async_call() is None


def _unbounded_warnings(caplog: pytest.LogCaptureFixture, op: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING
        and "nothing bounding" in r.getMessage()
        and op in r.getMessage()
    ]


async def test_an_unbounded_join_warns_once_naming_the_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "none")
    fan = guarded_op(name="UnboundedFanOut")(type("UnboundedFanOut", (FanOutOp,), {}))
    child = guarded_op(type("EchoChild", (EchoOp,), {}))
    with caplog.at_level(logging.WARNING, logger="hangguard"):
        assert await fan(ops=[child()]).async_call(values=[1, 2]) == [1, 2]
        assert await fan(ops=[child()]).async_call(values=[3]) == [3]
    (record,) = _unbounded_warnings(caplog, "UnboundedFanOut")
    assert "HANGGUARD_DEFAULT_BUDGET" in record.getMessage()


async def test_a_bounded_join_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    fan = guarded_op(name="BoundedFanOut")(type("BoundedFanOut", (FanOutOp,), {}))
    child = guarded_op(type("EchoChild", (EchoOp,), {}))
    with caplog.at_level(logging.WARNING, logger="hangguard"):
        # Bounded by the default op budget, with no timeout of its own.
        assert await fan(ops=[child()]).async_call(values=[1]) == [1]
        # Bounded by its own timeout, with the op budget opted out.
        unlimited = guarded_op(name="TimedFanOut", budget=math.inf)(
            type("TimedFanOut", (FanOutOp,), {})
        )
        await unlimited(ops=[child()]).async_call(values=[1], join={"timeout": 30})
    assert not _unbounded_warnings(caplog, "FanOut")


async def test_default_budget_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "90")
    d = await guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))().async_call()
    assert d.name == "ProbeOp"
    assert d.budget == 90.0


async def test_per_op_budget_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "90")
    monkeypatch.setenv("HANGGUARD_BUDGETS", "ProbeOp=15s,OtherOp=1")
    d = await guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))().async_call()
    assert d.budget == 15.0


async def test_explicit_budget_beats_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "90")
    monkeypatch.setenv("HANGGUARD_BUDGETS", "ProbeOp=15")
    cls = guarded_op(budget=7)(type("ProbeOp", (DeadlineProbeOp,), {}))
    d = await cls().async_call()
    assert d.budget == 7.0
    unlimited = guarded_op(budget=math.inf)(type("ProbeOp", (DeadlineProbeOp,), {}))
    assert await unlimited().async_call() is None


async def test_given_name_keys_the_budget_and_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_BUDGETS", "probe=4,ProbeOp=99")
    cls = guarded_op(name="probe")(type("ProbeOp", (DeadlineProbeOp,), {}))
    d = await cls().async_call()
    assert (d.name, d.budget) == ("probe", 4.0)


async def test_env_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    op = guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))()
    monkeypatch.setenv("HANGGUARD_BUDGETS", "ProbeOp=3")
    assert (await op.async_call()).budget == 3.0
    monkeypatch.setenv("HANGGUARD_BUDGETS", "ProbeOp=5")
    assert (await op.async_call()).budget == 5.0


async def test_bad_env_budget_fails_the_call_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cls = guarded_op(type("ProbeOp", (DeadlineProbeOp,), {}))  # decorating reads nothing
    monkeypatch.setenv("HANGGUARD_BUDGETS", "ProbeOp=soon")
    with pytest.raises(ConfigError) as info:
        await cls().async_call()
    assert info.value.name == "HANGGUARD_BUDGETS"


async def test_deadline_firing_inside_the_op_names_the_op(spans: InMemorySpanExporter) -> None:
    @guarded_op(budget=0.05)
    class HangOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            await hang()

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        await HangOp().async_call()
    assert time.monotonic() - start < 0.05 + MARGIN
    assert info.value.deadline_name == "HangOp"
    assert info.value.budget == 0.05
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[ATTR_ERROR_TYPE] == "hangguard.DeadlineExceeded"


async def test_nested_ops_inherit_the_deadline() -> None:
    seen: list[Any] = []

    class InnerOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            seen.append(current_deadline())
            return "done"

    class OuterOp(FanOutOp):
        pass

    inner_unlimited = guarded_op(type("InnerOp", (InnerOp,), {}))
    inner_longer = guarded_op(budget=600)(type("LongerOp", (InnerOp,), {}))
    outer = guarded_op(budget=60)(OuterOp)(ops=[inner_unlimited()])
    await outer.async_call(values=[1])
    outer_longer = guarded_op(budget=60)(type("OuterOp", (FanOutOp,), {}))(ops=[inner_longer()])
    await outer_longer.async_call(values=[1])

    default, longer = seen
    # No budget of its own: the default op budget, capped by the outer op's deadline.
    assert default.name == "InnerOp"
    assert default.budget == hangguard._config.DEFAULT_OP_BUDGET
    assert default.binding().name == "OuterOp"
    # A longer budget of its own is capped by the outer op's.
    assert longer.name == "LongerOp"
    assert longer.binding().name == "OuterOp"
    assert longer.expires_at == longer.parent.expires_at


async def test_outer_op_deadline_stops_hanging_nested_ops() -> None:
    _, guarded = guarded_pair(FanOutOp, EchoOp)
    outer_cls = guarded_op(budget=0.1)(type("FanOutOp", (FanOutOp,), {}))
    op = outer_cls(ops=guarded.ops)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        await op.async_call(values=["ok", "hang", "hang"])
    assert time.monotonic() - start < 0.1 + 0.5 + MARGIN  # budget + cancel grace
    assert info.value.deadline_name == "FanOutOp"
    assert isinstance(info.value, JoinTimeout)
    assert info.value.results[0] == "ok"
    assert op.task_list == []


# --- the mixin, fresh ---------------------------------------------------------------------


class FreshSearchOp(GuardedOpMixin):
    async def async_execute(self, query: str) -> Any:
        await asyncio.sleep(0)
        if query == "fail":
            raise ValueError(f"search {query!r} failed")
        if query == "hang":
            await hang()
        if query == "list":
            return [query, query]
        if query == "none":
            return None
        return query.upper()


class FreshFanOutOp(GuardedOpMixin, budget=30):
    async def async_execute(self, queries: list[str], **join: Any) -> Any:
        for q in queries:
            self.submit_async_task(FreshSearchOp().async_execute, q)
        return await self.join_async_task(**join)


async def test_fresh_mixin_results_in_submit_order_no_flattening() -> None:
    got = await FreshFanOutOp().async_execute(["a", "list", "none", "b"])
    assert got == ["A", ["list", "list"], None, "B"]


async def test_fresh_mixin_first_failure_cancels_siblings() -> None:
    with pytest.raises(ValueError, match="'fail'"):
        await FreshFanOutOp().async_execute(["hang", "fail", "hang"])


async def test_fresh_mixin_return_exceptions_in_place() -> None:
    got = await FreshFanOutOp().async_execute(["a", "fail"], return_exceptions=True)
    assert got[0] == "A"
    assert isinstance(got[1], ValueError)


async def test_fresh_mixin_join_timeout() -> None:
    with pytest.raises(JoinTimeout) as info:
        await FreshFanOutOp().async_execute(["a", "hang"], timeout=0.05)
    assert info.value.results[0] == "A"
    assert info.value.pending == ["FreshSearchOp[1]"]


async def test_fresh_mixin_join_with_nothing_submitted() -> None:
    assert await FreshFanOutOp().async_execute([]) == []


async def test_mixin_class_keywords_and_inheritance(monkeypatch: pytest.MonkeyPatch) -> None:
    class ProbeOp(GuardedOpMixin, budget=8, name="probe"):
        async def async_execute(self) -> Any:
            return current_deadline()

    class SubProbeOp(ProbeOp):
        pass

    class RenamedProbeOp(ProbeOp, name="renamed"):
        pass

    d = await ProbeOp().async_execute()
    assert (d.name, d.budget) == ("probe", 8.0)
    d = await SubProbeOp().async_execute()
    assert (d.name, d.budget) == ("probe", 8.0)
    d = await RenamedProbeOp().async_execute()
    assert (d.name, d.budget) == ("renamed", 8.0)


async def test_mixin_on_an_abstract_base_without_entry_point() -> None:
    class Base(GuardedOpMixin):
        helper: ClassVar[str] = "x"

    class ConcreteOp(Base):
        async def async_execute(self) -> Any:
            return current_deadline()

    d = await ConcreteOp().async_execute()
    assert (d.name, d.budget) == ("ConcreteOp", hangguard._config.DEFAULT_OP_BUDGET)


async def test_concurrent_runs_of_one_instance_do_not_mix() -> None:
    both_submitted = asyncio.Event()
    submitted = 0

    class SharedOp(GuardedOpMixin):
        async def async_execute(self, values: list[int]) -> Any:
            nonlocal submitted
            for v in values:
                self.submit_async_task(asyncio.sleep, 0, v)
            submitted += 1
            if submitted == 2:
                both_submitted.set()
            await both_submitted.wait()
            return await self.join_async_task()

    op = SharedOp()
    a, b = await asyncio.gather(op.async_execute([1, 2]), op.async_execute([3, 4, 5]))
    assert a == [1, 2]
    assert b == [3, 4, 5]


async def test_concurrent_runs_of_one_seed_op_instance_do_not_mix() -> None:
    both_submitted = asyncio.Event()
    submitted = 0

    @guarded_op
    class SharedSeedOp(BaseAsyncOp):
        async def async_execute(self) -> Any:
            nonlocal submitted
            for v in self.context["values"]:
                self.submit_async_task(asyncio.sleep, 0, [v])
            submitted += 1
            if submitted == 2:
                both_submitted.set()
            await both_submitted.wait()
            return await self.join_async_task()

    # One instance, two runs at once: the shared task_list holds both runs' tasks, and
    # each run's join must still see only its own.
    op = SharedSeedOp()
    a, b = await asyncio.gather(op.async_call(values=[1, 2]), op.async_call(values=[3, 4, 5]))
    assert a == [1, 2]
    assert b == [3, 4, 5]
    assert op.task_list == []


async def test_several_rounds_in_one_run() -> None:
    class RoundsOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            self.submit_async_task(asyncio.sleep, 0, "first")
            first = await self.join_async_task()
            self.submit_async_task(asyncio.sleep, 0, "second")
            return first + await self.join_async_task()

    assert await RoundsOp().async_execute() == ["first", "second"]


async def test_submit_outside_a_guarded_run_uses_the_instance() -> None:
    op = FreshFanOutOp()
    op.submit_async_task(asyncio.sleep, 0, "a")
    op.submit_async_task(asyncio.sleep, 0, "b")
    assert await op.join_async_task() == ["a", "b"]
    assert await op.join_async_task() == []


async def test_name_kwarg_reaches_the_submitted_function() -> None:
    async def greet(greeting: str, *, name: str) -> str:
        await asyncio.sleep(0)
        return f"{greeting} {name}"

    class GreetOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            self.submit_async_task(greet, "hi", name="ann")
            return await self.join_async_task()

    assert await GreetOp().async_execute() == ["hi ann"]


async def test_submitting_a_plain_function_is_a_type_error() -> None:
    class SyncSubmitOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            self.submit_async_task(len, "abc")

    with pytest.raises(TypeError, match="coroutine function"):
        await SyncSubmitOp().async_execute()


async def test_unjoined_tasks_are_joined_at_the_end_of_a_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks: list[asyncio.Task[Any]] = []

    class ForgetfulOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            tasks.append(self.submit_async_task(asyncio.sleep, 0, "late"))
            return "returned"

    with caplog.at_level(logging.WARNING, logger="hangguard"):
        assert await ForgetfulOp().async_execute() == "returned"
    (task,) = tasks
    assert task.done()
    assert task.result() == "late"
    assert any("without join_async_task" in r.getMessage() for r in caplog.records)


async def test_unjoined_tasks_are_cancelled_when_the_run_fails() -> None:
    tasks: list[asyncio.Task[Any]] = []

    class FailingOp(GuardedOpMixin):
        async def async_execute(self) -> Any:
            tasks.append(self.submit_async_task(hang))
            await asyncio.sleep(0)
            raise RuntimeError("op failed before joining")

    with pytest.raises(RuntimeError, match="before joining"):
        await FailingOp().async_execute()
    (task,) = tasks
    assert task.cancelled()


async def test_guarded_override_calling_super_makes_one_span(
    spans: InMemorySpanExporter,
) -> None:
    class BaseOp(GuardedOpMixin, BaseAsyncOp):
        async def async_execute(self) -> Any:
            return self.context["value"]

    class OverrideOp(BaseOp):
        async def async_call(self, **kwargs: Any) -> Any:
            return ["wrapped", await super().async_call(**kwargs)]

    assert await OverrideOp().async_call(value=1) == ["wrapped", 1]
    assert [s.name for s in spans.get_finished_spans()] == ["OverrideOp"]


# --- decorator forms and errors ----------------------------------------------------------


def test_guarded_op_forms() -> None:
    class AOp(BaseAsyncOp):
        pass

    assert guarded_op(AOp) is AOp
    assert guarded_op()(type("BOp", (BaseAsyncOp,), {})).__name__ == "BOp"
    assert guarded_op("named")(type("COp", (BaseAsyncOp,), {})).__name__ == "COp"


def test_guarded_op_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="budget"):
        guarded_op(budget=-1)
    with pytest.raises(ValueError, match="budget"):
        guarded_op(budget=math.nan)
    with pytest.raises(ValueError, match="name"):
        guarded_op(name="")
    with pytest.raises(TypeError, match="name twice"):
        guarded_op("a", name="b")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="NoEntry"):

        @guarded_op
        class NoEntry:
            pass

    with pytest.raises(TypeError, match=r"SyncEntry\.async_call"):

        @guarded_op
        class SyncEntry:
            def async_call(self) -> None:
                pass

    with pytest.raises(TypeError, match="decorates a class"):
        guarded_op(budget=1)(len)  # type: ignore[type-var]


def test_mixin_rejects_a_bad_budget() -> None:
    with pytest.raises(ValueError, match="budget"):

        class BadOp(GuardedOpMixin, budget=-3):
            pass


# --- without an SDK ----------------------------------------------------------------------


def test_ops_without_an_sdk_do_no_span_work() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        import hangguard
        from hangguard import _semconv, _spans

        @hangguard.guarded_op(budget=0.05)
        class HangOp:
            async def async_execute(self):
                await asyncio.Event().wait()

        class FanOp(hangguard.GuardedOpMixin):
            async def async_execute(self, n):
                for i in range(n):
                    self.submit_async_task(asyncio.sleep, 0, i)
                return await self.join_async_task()

        @hangguard.traced
        async def add(a, b):
            return a + b

        async def main():
            assert _spans.get_tracer() is None
            assert await FanOp().async_execute(3) == [0, 1, 2]
            assert await add(1, 2) == 3
            try:
                await HangOp().async_execute()
            except hangguard.DeadlineExceeded as exc:
                assert exc.deadline_name == "HangOp", exc
            else:
                raise AssertionError("no deadline")
            # Nothing installed a provider behind the application's back.
            assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
            print("ok")

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_public_names_are_exported() -> None:
    for name in ("GuardedOpMixin", "guarded_op", "traced"):
        assert name in hangguard.__all__
        assert getattr(hangguard, name).__module__ == "hangguard"


# -- task names of undecorated sub-ops -------------------------------------------------------


async def test_tasks_of_undecorated_sub_ops_are_named_after_the_sub_op_class(
    spans: InMemorySpanExporter,
) -> None:
    from hangguard.testing import BaseAsyncOp as ReferenceOp

    class PlainSearchOp(ReferenceOp):  # not decorated: async_call comes from the base
        async def async_execute(self) -> str:
            return str(self.context.query).upper()

    @hangguard.guarded_op(budget=30)
    class OuterOp(ReferenceOp):
        async def async_execute(self) -> Any:
            for query in ("a", "b"):
                self.submit_async_task(self.ops[0].copy().async_call, query=query)
            self.submit_async_task(PlainSearchOp().async_execute)
            return await self.join_async_task(return_exceptions=True)

    await OuterOp(ops=[PlainSearchOp()]).async_call()
    names = sorted(s.name for s in spans.get_finished_spans() if s.name.startswith("task "))
    assert names == ["task PlainSearchOp[0]", "task PlainSearchOp[1]", "task PlainSearchOp[2]"]


def test_guarded_op_given_a_number_suggests_the_budget_keyword() -> None:
    with pytest.raises(TypeError, match=r"guarded_op\(budget=30\)"):
        hangguard.guarded_op(30)  # type: ignore[call-overload]


def test_guarded_op_on_a_function_points_to_traced() -> None:
    async def fetch() -> None: ...

    with pytest.raises(TypeError, match=r"fetch'.*use @hangguard\.traced"):
        hangguard.guarded_op(budget=3)(fetch)  # type: ignore[type-var]


def test_a_class_with_no_entry_point_is_told_every_entry_point_accepted() -> None:
    class NothingOp:
        def run(self) -> None: ...

    with pytest.raises(TypeError) as info:
        hangguard.guarded_op(budget=3)(NothingOp)
    message = str(info.value)
    assert "NothingOp" in message
    for accepted in (
        "async def async_call()",
        "async def async_execute()",
        "async def execute() (flowllm 0.3's BaseStep)",
        "def call()",
        "def execute()",
        "submit_ray_task()",
    ):
        assert accepted in message, accepted
