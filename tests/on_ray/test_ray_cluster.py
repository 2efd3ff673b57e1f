"""RemoteGroup across several Ray nodes on one machine: a node or a worker lost while a
join waits ends the join on time, the lost task typed in its slot and the rest kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from conftest import HERE, SRC, need_ray

need_ray()

JOIN_TIMEOUT = 90  # the scenario's join timeout: the joins must end well before it


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, str(HERE / "cluster_scenario.py")],
        capture_output=True,
        text=True,
        timeout=115,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_node_lost_mid_task_is_typed_and_names_the_node(report: dict[str, Any]) -> None:
    node = report["node"]
    assert node["elapsed"] < JOIN_TIMEOUT
    kept, lost = node["results"]
    assert kept == {"type": "int", "value": 16}
    assert node["is_node_lost"]
    assert lost["task"] == "wait_forever_in_here[1]"
    assert lost["node"] == report["doomed_node"]
    assert lost["cause"] == "NodeDiedError"


def test_a_worker_lost_mid_task_is_typed(report: dict[str, Any]) -> None:
    worker = report["worker"]
    assert worker["elapsed"] < JOIN_TIMEOUT
    kept, lost = worker["results"]
    assert kept == {"type": "int", "value": 25}
    assert lost["type"] == "WorkerLost"
    assert lost["task"] == "wait_forever_in_here[1]"
