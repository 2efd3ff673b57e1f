"""A driver and a worker process sharing each trace, traced through ``setup_tracing()``.

The two-tier end-to-end tests run it against two gateways: the driver exports its spans to
one (``OTEL_EXPORTER_OTLP_ENDPOINT``), the worker it starts exports to the other
(``--worker-endpoint``), so the spans of every trace travel through both gateways and meet
again only at the sampler the trace id routes them to.

Per trace the driver opens a root span ``job <kind>`` and a ``dispatch`` child, and hands
the W3C ``traceparent`` of ``dispatch`` to the worker on its stdin; the worker runs the
guarded op ``WorkOp`` under it and answers on its stdout. The kinds:

* ``ok``: the op returns at once (healthy and fast: only the baseline share keeps it);
* ``error``: the op raises ``ValueError`` (status ``ERROR``);
* ``cancelled``: the op's join times out and cancels a task that hangs
  (``hangguard.cancelled``);
* ``slow``: the op returns at once, but the root span is dated ``--slow-seconds`` earlier
  (the latency policy sees a trace that long without the test waiting for it);
* ``hung``: the op hangs for its whole budget (``--hung-budget`` seconds) and raises
  ``JoinTimeout`` (its join was waiting when the budget ran out), after a quick task of
  it ended and was exported long before.

Usage: ``python two_process_app.py --worker-endpoint URL [--kinds ok:940,error:20,...]``.
It prints one JSON line: the trace ids by kind and both processes' export counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import hangguard


async def quick() -> str:
    return "done"


async def hang() -> str:
    # Waits for what never comes: a future no one resolves.
    await asyncio.get_running_loop().create_future()
    return "unreachable"


class WorkOp(hangguard.GuardedOpMixin):
    async def async_execute(self, kind: str) -> str:
        if kind == "error":
            raise ValueError("the backend returned garbage")
        if kind == "cancelled":
            self.submit_async_task(quick)
            self.submit_async_task(hang)
            try:
                await self.join_async_task(timeout=0.05)
            except hangguard.JoinTimeout:
                return "timed out"
        if kind == "hung":
            self.submit_async_task(quick)
            self.submit_async_task(hang)
            await self.join_async_task()
        return "ok"


def stats_of(tracing: Any) -> dict[str, Any]:
    ok = tracing.shutdown()
    s = tracing.stats()
    return {"shutdown_ok": ok, "ended": s.ended, "exported": s.exported, "failed": s.failed}


def worker() -> None:
    tracing = hangguard.setup_tracing()
    propagator = TraceContextTextMapPropagator()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        kind = request["kind"]
        token = context.attach(propagator.extract({"traceparent": request["traceparent"]}))
        try:
            try:
                asyncio.run(WorkOp().async_execute(kind))
                answer = "ok"
            except (ValueError, hangguard.DeadlineExceeded) as exc:
                answer = type(exc).__name__
        finally:
            context.detach(token)
        print(json.dumps({"answer": answer}), flush=True)
    print(json.dumps(stats_of(tracing)), flush=True)


def driver(
    worker_endpoint: str, kinds: list[tuple[str, int]], slow_seconds: float, hung_budget: float
) -> None:
    tracing = hangguard.setup_tracing()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": worker_endpoint}
    env["OTEL_SERVICE_NAME"] = env.get("OTEL_SERVICE_NAME", "two-process") + "-worker"
    # WorkOp's budget: the whole of a hung op's run.
    env["HANGGUARD_BUDGETS"] = f"WorkOp={hung_budget}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    tracer = trace.get_tracer("two_process_app")
    propagator = TraceContextTextMapPropagator()
    traces: dict[str, list[str]] = {}
    answers: dict[str, int] = {}
    for kind, count in kinds:
        for _ in range(count):
            start = time.time_ns()
            if kind == "slow":
                start -= int(slow_seconds * 1e9)
            with tracer.start_as_current_span(f"job {kind}", start_time=start) as root:
                traces.setdefault(kind, []).append(format(root.get_span_context().trace_id, "032x"))
                with tracer.start_as_current_span("dispatch"):
                    carrier: dict[str, str] = {}
                    propagator.inject(carrier)
                    proc.stdin.write(json.dumps({"kind": kind, **carrier}) + "\n")
                    proc.stdin.flush()
                    answer = json.loads(proc.stdout.readline())["answer"]
                    answers[answer] = answers.get(answer, 0) + 1
    proc.stdin.write(json.dumps({"quit": True}) + "\n")
    proc.stdin.flush()
    worker_stats = json.loads(proc.stdout.readline())
    proc.wait(60)
    report = {
        "traces": traces,
        "answers": answers,
        "driver": stats_of(tracing),
        "worker": worker_stats,
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--worker-endpoint")
    parser.add_argument("--kinds", default="ok:1")
    parser.add_argument("--slow-seconds", type=float, default=6.0)
    parser.add_argument("--hung-budget", type=float, default=3.0)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    kinds = [(k, int(n)) for k, n in (item.split(":") for item in args.kinds.split(","))]
    driver(args.worker_endpoint, kinds, args.slow_seconds, args.hung_budget)


if __name__ == "__main__":
    main()
