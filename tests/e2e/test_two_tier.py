"""End to end: the two-tier collector setup with real processes on loopback ports.

Two gateways (``collector/gateway.yaml``, routing by trace id) in front of two samplers
(``collector/sampler.yaml``, tail sampling) in front of Jaeger. The application is two
processes of one trace (``two_process_app.py``): the driver sends its spans through one
gateway, the worker through the other, so a trace is whole in Jaeger only when both
gateways sent its spans to the same sampler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jaeger_helpers import TRACE_TIMEOUT, Stack, get_trace, http_get, pause, wait_for_trace
from test_jaeger import service_name
from two_tier_helpers import Tier, reload, samplers_file, start_gateway, start_sampler

from hangguard.tracing import SpanRecord

pytestmark = pytest.mark.e2e

APP = Path(__file__).with_name("two_process_app.py")

#: Spans per trace of each kind: job, dispatch, WorkOp; plus the group and its two tasks
#: where the op submits tasks.
SPANS = {"ok": 3, "error": 3, "slow": 3, "cancelled": 6, "hung": 6}

#: The hung op's budget, and the app's export delay (OTEL_BSP_SCHEDULE_DELAY).
HUNG_BUDGET_S = 3.0
EXPORT_DELAY_MS = 200
#: The waits the rule of docs/production.md gives for them (cancel grace: 1 s):
#: decision_wait >= budget + export delay + margin; root wait >= export delay + grace + margin.
DECISION_WAIT = "10s"
ROOT_WAIT = "3s"

#: The baseline share of healthy fast traces kept, and the tolerance the issue allows.
PERCENT = 20
TOLERANCE_PP = 5


@dataclass
class TwoTier:
    gateways: list[Tier]
    samplers: list[Tier]
    overlay: Path
    query: str  # Jaeger's query API


def start_two_tier(
    gateway_bin: Path, stack: Stack, log_dir: Path, knobs: Mapping[str, str], tag: str
) -> TwoTier:
    jaeger = stack.jaeger_grpc.removeprefix("http://")
    samplers = [
        start_sampler(gateway_bin, jaeger, log_dir, f"sampler-{tag}-{i}", dict(knobs))
        for i in (1, 2)
    ]
    overlay = samplers_file(log_dir / f"samplers-{tag}.yaml", samplers)
    gateways = [start_gateway(gateway_bin, overlay, log_dir, f"gateway-{tag}-{i}") for i in (1, 2)]
    return TwoTier(gateways, samplers, overlay, stack.query)


def stop(tiers: TwoTier) -> None:
    for t in tiers.gateways + tiers.samplers:
        t.proc.stop()


@pytest.fixture(scope="module")
def two_tier(
    gateway_bin: Path, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoTier]:
    knobs = {
        "TAIL_SAMPLING_DECISION_WAIT": DECISION_WAIT,
        "TAIL_SAMPLING_ROOT_WAIT": ROOT_WAIT,
        "TAIL_SAMPLING_PERCENT": str(PERCENT),
        "TAIL_SAMPLING_SLOW_MS": "5000",
    }
    tiers = start_two_tier(gateway_bin, stack, tmp_path_factory.mktemp("two-tier"), knobs, "a")
    yield tiers
    stop(tiers)


def run_two_process_app(
    driver_endpoint: str, worker_endpoint: str, service: str, kinds: str, timeout: float = 110
) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HANGGUARD_"))}
    env = {
        **clean,
        "OTEL_EXPORTER_OTLP_ENDPOINT": driver_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_DELAY_MS),
    }
    args = [sys.executable, str(APP), "--worker-endpoint", worker_endpoint, "--kinds", kinds]
    args += ["--hung-budget", str(HUNG_BUDGET_S), "--slow-seconds", "6"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    for side in ("driver", "worker"):
        s = report[side]
        assert s["shutdown_ok"] is True and s["exported"] == s["ended"], (side, proc.stderr)
    return report


def late_spans(tier: Tier) -> float:
    """Spans that arrived after their trace was decided: those the decision cache released
    (followed the decision without being looked at) and those counted by their late age."""
    status, body = http_get(tier.telemetry)
    assert status == 200, body
    total = 0.0
    for line in body.decode().splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        cached = name.startswith(
            "otelcol_processor_tail_sampling_early_releases_from_cache_decision"
        ) and not name.endswith("_created")
        aged = name.startswith(
            "otelcol_processor_tail_sampling_sampling_late_span_age"
        ) and name.endswith("_count")
        if cached or aged:
            total += float(line.rsplit(" ", 1)[1])
    return total


def decisions(samplers: list[Tier]) -> list[dict[str, float]]:
    return [s.decisions() for s in samplers]


def wait_for_decided(
    samplers: list[Tier], before: list[dict[str, float]], n: int, timeout: float = TRACE_TIMEOUT
) -> list[dict[str, float]]:
    """Poll (bounded) until the samplers decided ``n`` more traces in all; the new decisions
    of each sampler by ``sampled``."""
    deadline = time.monotonic() + timeout
    while True:
        now = decisions(samplers)
        delta = [{k: a[k] - b.get(k, 0.0) for k in a} for a, b in zip(now, before, strict=True)]
        if sum(sum(d.values()) for d in delta) >= n or time.monotonic() > deadline:
            return delta
        pause()


def check_whole(records: list[SpanRecord], trace_id: str, kind: str, service: str) -> None:
    assert len(records) == SPANS[kind], (kind, sorted(r.name for r in records))
    assert len({r.span_id for r in records}) == len(records), "a span stored twice"
    assert {r.trace_id for r in records} == {trace_id}
    # Both processes' spans, so both gateways' share, are in it.
    assert {r.resource.get("service.name") for r in records} == {service, service + "-worker"}
    roots = [r for r in records if r.parent_span_id is None]
    assert [r.name for r in roots] == [f"job {kind}"]


def test_every_trace_is_decided_once_and_kept_whole_by_its_policy_or_the_percentage(
    two_tier: TwoTier,
) -> None:
    service = service_name()
    kinds = {"ok": 940, "error": 20, "cancelled": 20, "slow": 20}
    total = sum(kinds.values())
    before = decisions(two_tier.samplers)
    late_before = sum(late_spans(s) for s in two_tier.samplers)
    started = time.monotonic()
    report = run_two_process_app(
        two_tier.gateways[0].url,
        two_tier.gateways[1].url,
        service,
        ",".join(f"{k}:{n}" for k, n in kinds.items()),
    )
    assert report["answers"] == {"ok": 940 + 20 + 20, "ValueError": 20}
    decided = wait_for_decided(two_tier.samplers, before, total, timeout=60)
    # Every trace decided exactly once: a trace split between the samplers would be decided
    # twice (once on each part).
    assert sum(sum(d.values()) for d in decided) == total, decided
    # And the routing spread them: each sampler decided a fair share.
    assert all(sum(d.values()) > total / 4 for d in decided), decided

    # Errors, cancellations and slow traces: every one kept, whole.
    for kind in ("error", "cancelled", "slow"):
        for trace_id in report["traces"][kind]:
            check_whole(
                wait_for_trace(two_tier.query, trace_id, SPANS[kind]), trace_id, kind, service
            )
    # Healthy fast traces: the percentage, each kept one whole. The samplers said how many
    # they kept; poll (bounded) until Jaeger has that many.
    sampled = sum(d["true"] for d in decided)
    policy_kept = total - kinds["ok"]
    pending = set(report["traces"]["ok"])
    found: set[str] = set()
    deadline = time.monotonic() + TRACE_TIMEOUT
    while len(found) < sampled - policy_kept and time.monotonic() < deadline:
        found |= {t for t in pending - found if get_trace(two_tier.query, t)}
        pause()
    for trace_id in found:
        check_whole(wait_for_trace(two_tier.query, trace_id, SPANS["ok"]), trace_id, "ok", service)
    kept = len(found)
    share = 100 * kept / kinds["ok"]
    print(
        f"\ntwo-tier: {total} traces in {time.monotonic() - started:.1f}s; kept {kept} of "
        f"{kinds['ok']} healthy ({share:.1f}% for {PERCENT}%); decisions per sampler {decided}"
    )
    assert abs(share - PERCENT) <= TOLERANCE_PP, share
    assert sampled == kept + policy_kept, (sampled, kept)
    # Still once each, now that everything has long arrived; and no span came after its
    # trace's decision.
    final = wait_for_decided(two_tier.samplers, before, total, timeout=0)
    assert sum(sum(d.values()) for d in final) == total, final
    assert sum(late_spans(s) for s in two_tier.samplers) == late_before


def test_a_hung_op_is_decided_after_its_last_span_when_the_waits_follow_the_budget(
    two_tier: TwoTier,
) -> None:
    # The op's quick task ends at once and is exported EXPORT_DELAY_MS later; the op and the
    # root end HUNG_BUDGET_S later. The waits of the rule cover that: one decision, on the
    # whole trace, no span late.
    service = service_name()
    before = decisions(two_tier.samplers)
    late_before = sum(late_spans(s) for s in two_tier.samplers)
    report = run_two_process_app(
        two_tier.gateways[0].url, two_tier.gateways[1].url, service, "hung:1"
    )
    assert report["answers"] == {"JoinTimeout": 1}
    (trace_id,) = report["traces"]["hung"]
    decided = wait_for_decided(two_tier.samplers, before, 1)
    assert sum(d["true"] for d in decided) == 1 and sum(d["false"] for d in decided) == 0
    records = wait_for_trace(two_tier.query, trace_id, SPANS["hung"])
    check_whole(records, trace_id, "hung", service)
    by_name = {r.name: r for r in records}
    quick, root = by_name["task quick[0]"], by_name["job hung"]
    # The early span really was early: it ended a budget before the root did.
    assert root.end_ns - quick.end_ns >= 0.8 * HUNG_BUDGET_S * 1e9
    assert sum(late_spans(s) for s in two_tier.samplers) == late_before


def test_a_decision_wait_shorter_than_the_budget_decides_a_hung_op_on_its_early_spans(
    gateway_bin: Path, stack: Stack, tmp_path: Path
) -> None:
    # The control of the test above: the same app against a sampler that waits 1 s decides
    # the trace on the quick task alone (nothing to keep it by), and the spans that carry
    # the cancellation arrive late and follow that decision: the hung op is lost.
    jaeger = stack.jaeger_grpc.removeprefix("http://")
    knobs = {
        "TAIL_SAMPLING_DECISION_WAIT": "1s",
        "TAIL_SAMPLING_ROOT_WAIT": "0s",
        "TAIL_SAMPLING_PERCENT": "0",
    }
    sampler = start_sampler(gateway_bin, jaeger, tmp_path, "sampler-short-wait", knobs)
    try:
        service = service_name()
        report = run_two_process_app(sampler.url, sampler.url, service, "hung:1")
        (trace_id,) = report["traces"]["hung"]
        decided = wait_for_decided([sampler], [{"true": 0.0, "false": 0.0}], 1)
        assert decided == [{"true": 0.0, "false": 1.0}]
        # The rest of the trace reached the sampler after the decision (the app has exited,
        # so everything was sent): bounded poll until the sampler counted it.
        deadline = time.monotonic() + TRACE_TIMEOUT
        while late_spans(sampler) < SPANS["hung"] - 1:
            assert time.monotonic() < deadline, late_spans(sampler)
            pause()
        assert get_trace(stack.query, trace_id) == []
    finally:
        sampler.proc.stop()


def test_a_sampler_stopped_mid_run_loses_no_trace_that_had_not_reached_it(
    gateway_bin: Path, stack: Stack, tmp_path: Path
) -> None:
    knobs = {
        "TAIL_SAMPLING_DECISION_WAIT": "2s",
        "TAIL_SAMPLING_ROOT_WAIT": "1s",
        # Keep every trace: what is missing from Jaeger was lost, not sampled out.
        "TAIL_SAMPLING_PERCENT": "100",
    }
    tiers = start_two_tier(gateway_bin, stack, tmp_path, knobs, "f")
    live, dead = tiers.samplers
    try:
        service = service_name()
        gateways = (tiers.gateways[0].url, tiers.gateways[1].url)
        # 1. Both samplers up: the traces are spread over them.
        before = decisions(tiers.samplers)
        first = run_two_process_app(*gateways, service, "ok:100")
        decided = wait_for_decided(tiers.samplers, before, 100)
        assert [sum(d.values()) > 0 for d in decided] == [True, True], decided
        assert sum(sum(d.values()) for d in decided) == 100, decided

        # 2. One sampler stops. The traces routed to it now cannot reach it: the gateways
        #    accept them and hold them in their queues, retrying.
        dead.proc.stop()
        before = decisions([live])
        second = run_two_process_app(*gateways, service, "ok:100")
        stranded = wait_for_decided([live], before, 100, timeout=5)
        assert sum(stranded[0].values()) < 100, "no trace was routed to the stopped sampler"

        # 3. The sampler list without it (what a k8s or dns resolver does by itself), read
        #    again by each gateway: the queued traces are routed again, to the live one.
        samplers_file(tiers.overlay, [live])
        for gateway in tiers.gateways:
            reload(gateway)
        decided = wait_for_decided([live], before, 100, timeout=60)
        print(f"\nfailover: {100 - sum(stranded[0].values()):.0f} of 100 traces re-routed")
        assert decided == [{"true": 100.0, "false": 0.0}], decided
        for trace_id in first["traces"]["ok"] + second["traces"]["ok"]:
            check_whole(wait_for_trace(stack.query, trace_id, SPANS["ok"]), trace_id, "ok", service)
    finally:
        stop(tiers)
