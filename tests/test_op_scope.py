"""``traced``: a span and a deadline around a plain ``async def``, as guarded ops get."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hangguard
from hangguard import (
    DeadlineExceeded,
    current_deadline,
    traced,
)
from hangguard._config import ENV_VARS
from hangguard._semconv import (
    ATTR_OP_NAME,
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


# --- traced ------------------------------------------------------------------------------


async def test_traced_bare(spans: InMemorySpanExporter) -> None:
    @traced
    async def fetch(url: str, *, retries: int = 1) -> str:
        """Fetch a URL."""
        return f"{url}:{retries}"

    assert await fetch("u", retries=2) == "u:2"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a URL."
    assert str(inspect.signature(fetch)) == "(url: 'str', *, retries: 'int' = 1) -> 'str'"
    assert inspect.iscoroutinefunction(fetch)
    (span,) = spans.get_finished_spans()
    assert span.name == "fetch"
    assert span.attributes is not None
    assert span.attributes[ATTR_OP_NAME] == "fetch"


async def test_traced_with_arguments(spans: InMemorySpanExporter) -> None:
    @traced(name="rank", budget=3)
    async def rank_items() -> Any:
        return current_deadline()

    @traced("positional")
    async def other() -> Any:
        return current_deadline()

    d = await rank_items()
    assert (d.name, d.budget) == ("rank", 3.0)
    assert (await other()).budget == hangguard._config.DEFAULT_OP_BUDGET
    assert [s.name for s in spans.get_finished_spans()] == ["rank", "positional"]


async def test_traced_budget_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    @traced
    async def fetch() -> Any:
        return current_deadline()

    @traced(budget=2)
    async def pinned() -> Any:
        return current_deadline()

    monkeypatch.setenv("HANGGUARD_DEFAULT_BUDGET", "40")
    monkeypatch.setenv("HANGGUARD_BUDGETS", "fetch=9,pinned=9")
    assert (await fetch()).budget == 9.0
    assert (await pinned()).budget == 2.0
    monkeypatch.delenv("HANGGUARD_BUDGETS")
    assert (await fetch()).budget == 40.0


async def test_traced_deadline_fires() -> None:
    @traced(budget=0.05)
    async def stuck() -> None:
        await hang()

    with pytest.raises(DeadlineExceeded) as info:
        await stuck()
    assert info.value.deadline_name == "stuck"


async def test_traced_failure_and_method(spans: InMemorySpanExporter) -> None:
    class Client:
        @traced
        async def call(self, x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            return x * 2

    assert await Client().call(2) == 4
    with pytest.raises(ValueError, match="negative"):
        await Client().call(-1)
    ok, failed = spans.get_finished_spans()
    assert ok.name == "Client.call"
    assert failed.status.status_code is StatusCode.ERROR


def test_traced_rejects_non_async_at_decoration() -> None:
    def plain() -> None:
        pass

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="plain"):
        traced(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agen"):
        traced(budget=1)(agen)
    with pytest.raises(ValueError, match="budget"):
        traced(budget=-1)
    with pytest.raises(TypeError, match="name twice"):
        traced("a", name="b")  # type: ignore[call-overload]


# --- the budget in force -----------------------------------------------------------------


async def test_the_span_shows_the_budget_in_force_and_its_own_only_when_it_differs(
    spans: InMemorySpanExporter,
) -> None:
    from hangguard._semconv import ATTR_OWN_TIMEOUT_S, ATTR_TIMEOUT_S
    from hangguard.testing import FakeClock, use_clock

    @traced(budget=300)
    async def search() -> float:
        return hangguard.remaining()

    @traced(budget=2)
    async def short() -> float:
        return hangguard.remaining()

    with use_clock(FakeClock()) as clock:
        async with hangguard.deadline(3, name="outer"):
            assert isinstance(clock, FakeClock)
            clock.advance(0.5)
            assert await search() == 2.5  # the enclosing deadline binds
            assert await short() == 2.0  # its own budget binds
        assert await search() == 300  # nothing encloses it
    nested, own, alone = (s.attributes for s in spans.get_finished_spans())
    assert nested is not None and own is not None and alone is not None
    assert (nested[ATTR_TIMEOUT_S], nested[ATTR_OWN_TIMEOUT_S]) == (2.5, 300)
    assert own[ATTR_TIMEOUT_S] == 2 and ATTR_OWN_TIMEOUT_S not in own
    assert alone[ATTR_TIMEOUT_S] == 300 and ATTR_OWN_TIMEOUT_S not in alone
