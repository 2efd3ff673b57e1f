"""guarded_op on Ray ops (flowllm's BaseRayOp shape): on a real Ray, and against the real
flowllm 0.2 in its own environment (HANGGUARD_FLOWLLM_PYTHON)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import ray_tasks

import hangguard
from conftest import HERE, SRC, in_ci, need_ray
from hangguard import DeadlineExceeded, JoinTimeout, _semconv

need_ray()

pytestmark = pytest.mark.usefixtures("ray_session")


@hangguard.guarded_op(budget=60)
class ItemsOp(ray_tasks.RayShapedOp):
    def execute(self) -> Any:
        return self.submit_and_join_ray_task(
            ray_tasks.item_and_budget, parallel_key="item", item=self.params["items"]
        )


@hangguard.guarded_op(name="HangingItemsOp", budget=4)
class HangingItemsOp(ItemsOp):
    pass


def test_a_guarded_ray_op_keeps_its_shaping_and_sends_its_budget(spans: Any) -> None:
    op = ItemsOp(items=["a", "b", "c"])
    results = op.call()
    assert sorted(r["item"] for r in results) == ["a", "b", "c"]  # flattened by its join
    assert all(0 < r["left"] <= 60 for r in results)
    assert op.ray_task_list == []
    names = [s.name for s in spans.get_finished_spans()]
    assert "ItemsOp" in names
    assert names.count("task RayShapedOp.ray_task_loop[0]") == 1
    (op_span,) = [s for s in spans.get_finished_spans() if s.name == "ItemsOp"]
    assert op_span.attributes[_semconv.ATTR_TIMEOUT_S] == 60


def test_a_guarded_ray_ops_join_ends_within_its_budget() -> None:
    op = HangingItemsOp(items=["a", "hang"])
    started = time.monotonic()
    with pytest.raises(JoinTimeout) as caught:
        op.call()
    assert time.monotonic() - started < 4 + 1 + 20
    err = caught.value
    assert err.deadline_name == "HangingItemsOp"
    assert [r["item"] for r in err.results[0]] == ["a"]
    assert isinstance(err.results[1], DeadlineExceeded)
    assert op.ray_task_list == []


FLOWLLM_SCRIPT = HERE / "flowllm_ray_op.py"


def test_the_real_flowllm_base_ray_op_is_guarded(tmp_path: Path) -> None:
    python = os.environ.get("HANGGUARD_FLOWLLM_PYTHON")
    if not python:
        if in_ci():
            pytest.fail("HANGGUARD_FLOWLLM_PYTHON is not set but CI=true")
        pytest.skip("HANGGUARD_FLOWLLM_PYTHON is not set (bash scripts/flowllm-env.sh)")
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "HANGGUARD_CANCEL_GRACE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [python, str(FLOWLLM_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(report["ok"]["items"]) == ["a", "b", "c"]
    assert all(0 < left <= 60 for left in report["ok"]["left"])
    assert report["timeout"]["error"] == "JoinTimeout"
    assert report["timeout"]["elapsed"] < 4 + 1 + 30
    assert report["timeout"]["first"] == ["a"]
    assert report["timeout"]["pending"] == 1
