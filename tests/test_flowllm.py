"""The sync op guard against the real flowllm 0.2 ``BaseOp`` (thread fan-out over
``C.thread_pool``), in the separate interpreter built by ``scripts/flowllm-env.sh``.

``HANGGUARD_FLOWLLM_PYTHON`` names that interpreter; the op code runs there as a
subprocess with this checkout's ``src`` first on its path. Without it the test is
skipped, except under ``CI=true``, where a missing interpreter is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "flowllm" / "check_base_op.py"
#: The op's budget, from HANGGUARD_BUDGETS as an application would set it.
BUDGET = 0.5
MARGIN = 1.5


def flowllm_python() -> str:
    python = os.environ.get("HANGGUARD_FLOWLLM_PYTHON", "")
    if not python:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but HANGGUARD_FLOWLLM_PYTHON is unset: build the flowllm venv with "
                "scripts/flowllm-env.sh and export its python"
            )
        pytest.skip("HANGGUARD_FLOWLLM_PYTHON is unset (see scripts/flowllm-env.sh)")
    return python


@pytest.fixture(scope="module")
def check() -> dict[str, Any]:
    python = flowllm_python()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HANGGUARD_BUDGETS": f"HangingSearchOp={BUDGET}",
    }
    for var in ("HANGGUARD_DEFAULT_BUDGET", "HANGGUARD_JOIN_TIMEOUT", "HANGGUARD_SERIAL"):
        env.pop(var, None)
    out = subprocess.run(
        [python, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_guarded_base_op_shapes_results_as_flowllm_does(check: dict[str, Any]) -> None:
    for mode, (plain, guarded) in check["equivalent"].items():
        assert guarded == plain, mode
    assert check["equivalent"]["True"][0] == [0, 0, 4, 40, 8, 80]


def test_a_hanging_thread_task_is_bounded_by_the_env_budget(check: dict[str, Any]) -> None:
    error = check["error"]
    assert error is not None and error["type"] == "JoinTimeout"
    assert error["deadline"] == "HangingSearchOp"
    assert error["first"] == ["a-1", "a-2"]
    assert check["elapsed"] < BUDGET + MARGIN


def test_the_trace_shows_the_stuck_thread_stack(check: dict[str, Any]) -> None:
    spans = {s["name"]: s for s in check["spans"]}
    op = spans["HangingSearchOp"]
    assert op["attributes"]["hangguard.timeout_s"] == BUDGET
    assert op["attributes"]["error.type"].endswith("JoinTimeout")
    assert spans["group HangingSearchOp"]["attributes"]["hangguard.group.abandoned"] == 1
    (event,) = spans["task stuck_read[1]"]["events"]
    assert event["name"] == "hangguard.cancelled"
    assert event["attributes"]["hangguard.task.stack"].splitlines()[0].endswith("in stuck_read")


@pytest.fixture(scope="module")
def logged() -> dict[str, Any]:
    """What the guarded real ``BaseAsyncOp`` logged per sub-task failure (see the script)."""
    python = flowllm_python()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for var in ("HANGGUARD_BUDGETS", "HANGGUARD_DEFAULT_BUDGET", "HANGGUARD_JOIN_TIMEOUT"):
        env.pop(var, None)
    out = subprocess.run(
        [python, str(ROOT / "tests" / "flowllm" / "check_logged_once.py")],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_returned_failure_is_logged_once_by_flowllms_own_join(logged: dict[str, Any]) -> None:
    # flowllm's join_async_task receives both failures (return_exceptions=True) and logs
    # each with its traceback: the group, which handed them over, does not log them too.
    returned = logged["returned"]
    assert returned["result"] == ["a"]
    assert returned["logged"] == ["loguru: Task failed with exception"] * 2


def test_a_raised_failure_is_not_logged_on_its_way_to_the_caller(logged: dict[str, Any]) -> None:
    raised = logged["raised"]
    assert raised["error"] == "search for 'down-1' failed"
    assert raised["logged"] == []
