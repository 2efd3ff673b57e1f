"""A property test of join over random mixes of task behaviours and timeouts.

Each example runs a real event loop with small real timeouts; margins are wide
(0.5 s on top of timeout + grace) because a loaded 2-core CI machine can stall.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard
from hangguard import JoinTimeout, TaskGroup
from timing import WIDE_MARGIN

GRACE = 0.05
MARGIN = WIDE_MARGIN  # a join that fails this hangs forever: see timing.py

kinds = st.sampled_from(["ok", "falsy", "list", "raise", "hang", "ignore_cancel", "slow_ok"])


class Boom(Exception):
    pass


async def behave(kind: str, index: int, released: asyncio.Event) -> Any:
    if kind == "ok":
        await asyncio.sleep(0)
        return index
    if kind == "falsy":
        return 0
    if kind == "list":
        return [index, index]
    if kind == "raise":
        await asyncio.sleep(0)
        raise Boom(index)
    if kind == "slow_ok":
        await asyncio.sleep(0.02)
        return index
    if kind == "hang":
        await asyncio.Event().wait()
    # ignore_cancel: swallow the group's cancellation, then wait for the test's release.
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    await released.wait()
    return "late"


def expected_value(kind: str, index: int) -> Any:
    return {"ok": index, "falsy": 0, "list": [index, index], "slow_ok": index}[kind]


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.failures.append(record.exc_info[1])


SCENARIOS = int(os.environ.get("HANGGUARD_PROPERTY_EXAMPLES", "120"))


@settings(
    max_examples=SCENARIOS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(kinds, min_size=0, max_size=8),
    timeout=st.sampled_from([0.01, 0.03, 0.1, None]),
    return_exceptions=st.booleans(),
)
def test_join_properties(
    plan: list[str],
    timeout: float | None,
    return_exceptions: bool,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", str(GRACE))
    blocking = any(k in ("hang", "ignore_cancel") for k in plan)
    if timeout is None and blocking:
        timeout = 0.05  # a join with no limit over a hanging task would hang by design
    spans.clear()
    handler = CountingHandler()
    logger = logging.getLogger("hangguard")
    logger.addHandler(handler)
    try:
        asyncio.run(check(plan, timeout, return_exceptions, spans, handler))
    finally:
        logger.removeHandler(handler)


async def check(
    plan: list[str],
    timeout: float | None,
    return_exceptions: bool,
    spans: InMemorySpanExporter,
    handler: CountingHandler,
) -> None:
    released = asyncio.Event()
    group = TaskGroup("prop")
    tasks = [group.submit(behave, k, i, released, name=f"t{i}") for i, k in enumerate(plan)]
    started = time.monotonic()
    outcome: Any
    try:
        outcome = await group.join(timeout=timeout, return_exceptions=return_exceptions)
    except JoinTimeout as exc:
        outcome = exc
    except Boom as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    limit = (timeout or 0) + GRACE + MARGIN
    assert elapsed <= limit, f"join took {elapsed:.3f}s > {limit:.3f}s"

    ignoring = {f"t{i}" for i, k in enumerate(plan) if k == "ignore_cancel"}
    # No task is left pending, except those that ignored cancellation (and were reported).
    for i, t in enumerate(tasks):
        if not t.done():
            assert f"t{i}" in ignoring

    raisers = [i for i, k in enumerate(plan) if k == "raise"]
    if isinstance(outcome, list):
        assert len(outcome) == len(plan)
        for i, k in enumerate(plan):
            if k == "raise":
                assert return_exceptions and isinstance(outcome[i], Boom)
                assert outcome[i].args == (i,)
            else:
                assert outcome[i] == expected_value(k, i)
    elif isinstance(outcome, Boom):
        assert not return_exceptions and outcome.args[0] in raisers
    else:
        assert isinstance(outcome, JoinTimeout)
        assert len(outcome.results) == len(plan)
        for i, k in enumerate(plan):
            r = outcome.results[i]
            if f"t{i}" in outcome.pending:
                assert isinstance(r, hangguard.DeadlineExceeded)
            elif k == "raise":
                assert isinstance(r, Boom)
            else:
                assert r == expected_value(k, i)
        for i, k in enumerate(plan):
            if k in ("hang", "ignore_cancel"):
                assert f"t{i}" in outcome.pending

    # Every failure logged exactly once, with its traceback.
    logged = [e for e in handler.failures if isinstance(e, Boom)]
    failed = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
    assert sorted(e.args[0] for e in logged) == sorted(
        e.args[0] for e in failed if isinstance(e, Boom)
    )

    # Every task the group cancelled has its hangguard.cancelled event, with a reason.
    released.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    for i, t in enumerate(tasks):
        if t in group._cancel_info:
            span = by_name[f"task t{i}"]
            reasons = [
                (e.attributes or {}).get("hangguard.cancel.reason")
                for e in span.events
                if e.name == "hangguard.cancelled"
            ]
            assert reasons and reasons[0] in ("sibling_failed", "timeout")
