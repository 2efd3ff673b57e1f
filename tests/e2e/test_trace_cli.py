"""``hangguard trace --jaeger``: a trace read back from a real Jaeger's query API prints the
tree ``hangguard trace FILE`` prints from the same spans in a file."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from jaeger_helpers import Stack, run_app, wait_for_trace
from test_jaeger import ALL_SPANS, ERRORED_SPANS, OK_SPANS

pytestmark = pytest.mark.e2e


def hangguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hangguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )


def test_trace_from_jaeger_is_the_tree_of_the_same_spans_from_a_file(
    stack: Stack, tmp_path: Path
) -> None:
    service = f"trace-cli-{uuid.uuid4().hex[:10]}"
    run = run_app(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": stack.jaeger_grpc, "OTEL_SERVICE_NAME": service},
        "--shutdown",
    )
    report = run.report
    assert report["stats"]["exported"] == ALL_SPANS, run.stderr
    errored_id = report["errored_trace"]
    errored = wait_for_trace(stack.query, errored_id, ERRORED_SPANS)
    wait_for_trace(stack.query, report["ok_trace"], OK_SPANS)

    # The same spans, as HANGGUARD_TRACE_FILE would have held them.
    span_file = tmp_path / "trace.jsonl"
    span_file.write_text("".join(json.dumps(r.to_json()) + "\n" for r in errored))
    from_file = hangguard("trace", str(span_file))
    assert from_file.returncode == 0, from_file.stderr

    from_jaeger = hangguard("trace", "--jaeger", stack.query, errored_id)
    assert from_jaeger.returncode == 0, from_jaeger.stderr
    assert from_jaeger.stdout == from_file.stdout
    for line in ("ResearchOp", "group FanOutOp", "task SearchOp[3]", "sibling_failed"):
        assert line in from_jaeger.stdout

    # By service: --list names its traces; without it, its latest is shown.
    listed = hangguard("trace", "--jaeger", stack.query, "--service", service, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert errored_id in {row["trace_id"] for row in rows}
    assert {row["spans"] for row in rows if row["trace_id"] == errored_id} == {ERRORED_SPANS}
    by_prefix = hangguard(
        "trace", "--jaeger", stack.query, "--service", service, "--trace-id", errored_id[:12]
    )
    assert by_prefix.stdout == from_file.stdout, by_prefix.stderr

    missing = hangguard("trace", "--jaeger", stack.query, "0" * 31 + "1")
    assert missing.returncode == 2
    assert "has no trace" in missing.stderr


def test_doctor_says_a_jaeger_built_from_source_has_no_ui_and_what_to_do(stack: Stack) -> None:
    done = hangguard("doctor", "--jaeger-url", stack.query, "--json")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["Jaeger query"]["status"] == "ok", checks
    ui = checks["Jaeger UI"]
    assert ui["status"] == "warn"
    assert f"hangguard trace --jaeger {stack.query} TRACE_ID" in ui["fix"]
