"""End to end: a seed-style app traced through setup_tracing, the collector's tail sampling,
Jaeger's query API; and the same app with the collector stopped or blackholed."""

from __future__ import annotations

import time
import uuid

import pytest
from jaeger_helpers import (
    TRACE_TIMEOUT,
    Collector,
    Stack,
    dedent,
    find_traces,
    pause,
    render,
    run_app,
    wait_for_trace,
)

from hangguard.tracing import SpanRecord

pytestmark = pytest.mark.e2e

#: The errored scenario as Jaeger must show it: every span, its parent, its status and
#: the reasons it was cancelled for.
ERRORED_TREE = dedent(
    """
    scenario errored
      ResearchOp [ERROR]
        TimeboxedOp
          group TimeboxedOp [ERROR]
            task SearchOp[0]
              SearchOp
            task SearchOp[1] cancelled(timeout)
              SearchOp cancelled(parent_cancelled)
        FanOutOp [ERROR]
          group FanOutOp [ERROR]
            task SearchOp[0]
              SearchOp
            task SearchOp[1]
              SearchOp
            task SearchOp[2] cancelled(sibling_failed)
              SearchOp cancelled(parent_cancelled)
            task SearchOp[3] [ERROR]
              SearchOp [ERROR]
    """
)
ERRORED_SPANS = ERRORED_TREE.count("\n") + 1

OK_TREE = dedent(
    """
    scenario ok
      FanOutOp
        group FanOutOp
          task SearchOp[0]
            SearchOp
          task SearchOp[1]
            SearchOp
    """
)
OK_SPANS = OK_TREE.count("\n") + 1

#: Cancelled and nothing else: no error, no event, only the attribute on the task span.
CANCELLED_TREE = dedent(
    """
    scenario cancelled
      group abandoned
        task waits cancelled(parent_cancelled)
    """
)
CANCELLED_SPANS = CANCELLED_TREE.count("\n") + 1
ALL_SPANS = ERRORED_SPANS + OK_SPANS + CANCELLED_SPANS

#: Beyond shutdown_timeout (2 s), what the exit may take on a loaded 2-core box.
EXIT_MARGIN = 1.5


def service_name() -> str:
    return f"seed-app-{uuid.uuid4().hex[:10]}"


def check_links(records: list[SpanRecord], trace_id: str, service: str) -> None:
    ids = {r.span_id for r in records}
    assert len(ids) == len(records), "duplicate span ids"
    assert {r.trace_id for r in records} == {trace_id}
    roots = [r for r in records if r.parent_span_id is None]
    assert len(roots) == 1, [r.name for r in roots]
    assert all(r.parent_span_id in ids for r in records if r is not roots[0])
    assert {r.resource.get("service.name") for r in records} == {service}


def wait_for_decisions(collector: Collector, before: dict[str, float], n: int) -> dict[str, float]:
    """Poll (bounded) the collector's own metrics until the tail sampler decided ``n`` more
    traces; return the new decisions by ``sampled``."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    while True:
        now = collector.tail_sampling_decisions()
        delta = {k: now[k] - before.get(k, 0.0) for k in now}
        if sum(delta.values()) >= n or time.monotonic() > deadline:
            return delta
        pause()


def test_the_whole_tree_reaches_jaeger_and_tail_sampling_keeps_only_what_matters(
    stack: Stack,
) -> None:
    service = service_name()
    before = stack.collector.tail_sampling_decisions()
    run = run_app(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.grpc, "OTEL_SERVICE_NAME": service},
        "--shutdown",
    )
    report = run.report
    assert report["settings"] == {"exporter": "otlp", "endpoint": stack.collector.grpc}
    # Nothing lost between the app and the collector.
    assert report["shutdown_ok"] is True, run.stderr
    assert report["stats"] == {
        "ended": ALL_SPANS,
        "exported": ALL_SPANS,
        "failed": 0,
    }

    errored = wait_for_trace(stack.query, report["errored_trace"], ERRORED_SPANS)
    assert render(errored) == ERRORED_TREE
    check_links(errored, report["errored_trace"], service)

    by_name: dict[str, list[SpanRecord]] = {}
    for r in errored:
        by_name.setdefault(r.name, []).append(r)
    # The cancellations carry their cause, not just their reason, on the span (what
    # Jaeger's tag search and the tail sampler match) and on the event.
    for task in by_name["task SearchOp[2]"] + by_name["task SearchOp[1]"]:
        events = task.events_named("hangguard.cancelled")
        if events:
            assert task.attributes.get("hangguard.cancel.cause"), task
        for event in events:
            assert event.attributes.get("hangguard.cancel.cause"), task
    # The retry: the flaky search failed once, with what it failed with.
    retries = [e for r in by_name["SearchOp"] for e in r.events_named("hangguard.retry")]
    assert len(retries) == 1
    assert retries[0].attributes["hangguard.retry.attempt"] == 1
    assert retries[0].attributes["exception.type"] == "ConnectionError"
    # The failure is on the spans that failed, with its type.
    fanout_group = {g.span_id for g in by_name["group FanOutOp"]}
    (broken_task,) = [r for r in by_name["task SearchOp[3]"] if r.parent_span_id in fanout_group]
    assert broken_task.attributes["error.type"] == "ValueError"
    assert broken_task.events_named("exception")

    # Tail sampling: two traces kept (errors; a cancellation known only by the span
    # attribute), one dropped (healthy, fast, and the sampled share is 0 here).
    decided = wait_for_decisions(stack.collector, before, 3)
    assert decided == {"true": 2.0, "false": 1.0}
    traces = find_traces(stack.query, service)
    assert set(traces) == {report["errored_trace"], report["cancelled_trace"]}
    assert len(traces[report["errored_trace"]]) == ERRORED_SPANS
    cancelled = wait_for_trace(stack.query, report["cancelled_trace"], CANCELLED_SPANS)
    assert render(cancelled) == CANCELLED_TREE
    assert not any(r.events_named("hangguard.cancelled") for r in cancelled)

    # The app's metrics went through the collector's metrics pipeline (sent at shutdown).
    deadline = time.monotonic() + TRACE_TIMEOUT
    while not (tasks := stack.collector.app_metric("hangguard_tasks_total", service)):
        assert time.monotonic() < deadline, "no hangguard_tasks_total from the app"
        pause()
    assert tasks == {
        # TimeboxedOp: fast, hang (its join timed out); FanOutOp: fast, flaky, slow
        # (cancelled when broken failed), broken; the ok scenario: two more; the cancelled
        # scenario: one, cancelled.
        'hangguard_task_outcome="ok"': 5.0,
        'hangguard_task_outcome="timeout"': 1.0,
        'hangguard_task_outcome="cancelled"': 2.0,
        'hangguard_task_outcome="failed"': 1.0,
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_no_span_is_lost_against_a_healthy_receiver(stack: Stack, protocol: str) -> None:
    # Straight to Jaeger, which keeps everything: every span ended must be stored.
    service = service_name()
    endpoint = stack.jaeger_grpc if protocol == "grpc" else stack.jaeger_http
    run = run_app(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": service,
        },
        "--shutdown",
    )
    report = run.report
    assert report["shutdown_ok"] is True, run.stderr
    assert report["stats"]["exported"] == report["stats"]["ended"] == ALL_SPANS
    ok = wait_for_trace(stack.query, report["ok_trace"], OK_SPANS)
    assert render(ok) == OK_TREE
    check_links(ok, report["ok_trace"], service)
    errored = wait_for_trace(stack.query, report["errored_trace"], ERRORED_SPANS)
    assert render(errored) == ERRORED_TREE
    assert sum(len(t) for t in find_traces(stack.query, service).values()) == (ALL_SPANS)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["stopped", "blackholed"])
def test_a_dead_collector_slows_nothing_and_the_exit_stays_bounded(
    request: pytest.FixtureRequest, stack: Stack, failure: str
) -> None:
    healthy = run_app(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.grpc, "OTEL_SERVICE_NAME": service_name()}
    )
    if failure == "stopped":
        endpoint = request.getfixturevalue("stopped_collector")
    else:
        endpoint = "http://" + request.getfixturevalue("blackhole")
    dead = run_app({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": service_name()})

    # The op does the same work either way: ending a span only queues it.
    assert dead.report["op_seconds"] < healthy.report["op_seconds"] + 0.5, (healthy, dead)
    # A healthy collector takes the spans at exit at once; a dead one costs the exit at
    # most shutdown_timeout, and the loss is reported.
    assert healthy.exit_seconds < 2.0, healthy.stderr
    assert dead.exit_seconds < 2.0 + EXIT_MARGIN, dead.stderr
    assert f"{ALL_SPANS} of {ALL_SPANS} spans not delivered" in (dead.stderr)
