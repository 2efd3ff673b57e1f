"""A seed-style application, traced through ``hangguard.setup_tracing()``.

The end-to-end tests run it in a fresh interpreter (so its global provider is its own)
against the real collector and Jaeger, against a stopped collector and against a
blackhole. It prints one JSON line with the trace ids and timings, then ``EXITING``;
everything after that line is the process exit, which the tests time.

Two traces, each under a root span of its own:

* ``scenario errored``: ``ResearchOp`` runs ``TimeboxedOp`` (a join timeout cancels the
  task that hangs, partial results kept) and then ``FanOutOp``, where ``flaky`` succeeds on
  its second attempt, and ``broken`` fails, which cancels ``slow``;
* ``scenario ok``: ``FanOutOp`` over two queries that succeed: nothing to keep it by.

Usage: ``python seed_app.py [--shutdown]`` (with ``--shutdown`` it shuts tracing down
itself and reports the export counts; without, the exit hook does it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from opentelemetry import trace

import hangguard

# Synchronisation between the fake backends: each waits for what it depends on.
flaky_done = asyncio.Event()
slow_started = asyncio.Event()
never = asyncio.Event()
attempts: dict[str, int] = {}


@hangguard.retry(
    attempts=3, on=ConnectionError, backoff=hangguard.Backoff(initial=0.01, maximum=0.01, jitter=0)
)
async def search_backend(query: str) -> str:
    attempts[query] = attempts.get(query, 0) + 1
    if query == "flaky":
        if attempts[query] == 1:
            raise ConnectionError("connection reset by peer")
        flaky_done.set()
    elif query == "slow":
        slow_started.set()
        await never.wait()
    elif query == "hang":
        await never.wait()
    elif query == "broken":
        await flaky_done.wait()
        await slow_started.wait()
        raise ValueError("backend returned garbage")
    return f"result for {query}"


class SearchOp(hangguard.GuardedOpMixin):
    async def async_execute(self, query: str) -> str:
        return await search_backend(query)


class FanOutOp(hangguard.GuardedOpMixin):
    async def async_execute(self, queries: list[str]) -> list[Any]:
        for query in queries:
            self.submit_async_task(SearchOp().async_execute, query)
        return list(await self.join_async_task())


class TimeboxedOp(hangguard.GuardedOpMixin):
    async def async_execute(self, queries: list[str]) -> list[Any]:
        for query in queries:
            self.submit_async_task(SearchOp().async_execute, query)
        try:
            return list(await self.join_async_task(timeout=0.2, return_exceptions=True))
        except hangguard.JoinTimeout as exc:
            return list(exc.results)


class ResearchOp(hangguard.GuardedOpMixin):
    async def async_execute(self) -> list[Any]:
        partial = await TimeboxedOp().async_execute(["fast", "hang"])
        return partial + await FanOutOp().async_execute(["fast", "flaky", "slow", "broken"])


async def scenarios() -> dict[str, str]:
    tracer = trace.get_tracer("seed_app")
    with tracer.start_as_current_span("scenario errored") as span:
        errored = format(span.get_span_context().trace_id, "032x")
        try:
            await ResearchOp().async_execute()
        except ValueError:
            pass
        else:
            raise AssertionError("ResearchOp should have failed")
    with tracer.start_as_current_span("scenario ok") as span:
        ok = format(span.get_span_context().trace_id, "032x")
        await FanOutOp().async_execute(["fast", "fast too"])
    # Cancelled, nothing failed, and no hangguard.cancelled event anywhere: only the task
    # span's hangguard.cancel.reason attribute can get this trace kept by the sampler.
    with tracer.start_as_current_span("scenario cancelled") as span:
        cancelled = format(span.get_span_context().trace_id, "032x")
        os.environ["HANGGUARD_CANCEL_EVENTS"] = "0"
        try:
            async with hangguard.TaskGroup("abandoned") as group:
                group.submit_named("waits", never.wait)
                raise LookupError("the caller went away")
        except LookupError:
            pass
        finally:
            del os.environ["HANGGUARD_CANCEL_EVENTS"]
    return {"errored_trace": errored, "ok_trace": ok, "cancelled_trace": cancelled}


def main() -> None:
    tracing = hangguard.setup_tracing()
    start = time.perf_counter()
    report: dict[str, Any] = asyncio.run(scenarios())
    report["op_seconds"] = time.perf_counter() - start
    report["settings"] = {
        "exporter": tracing.settings.exporter,
        "endpoint": tracing.settings.traces_endpoint,
    }
    if "--shutdown" in sys.argv:
        report["shutdown_ok"] = tracing.shutdown()
        s = tracing.stats()
        report["stats"] = {"ended": s.ended, "exported": s.exported, "failed": s.failed}
    print(json.dumps(report), flush=True)
    print("EXITING", flush=True)


if __name__ == "__main__":
    main()
