"""Several Ray nodes on this machine (ray.cluster_utils.Cluster, every address 127.0.0.1):
lose a node, then a worker, while a RemoteGroup's join waits. Prints one JSON line.

Run by test_ray_cluster.py in a process of its own (a driver connects to one Ray
cluster per process, and the other Ray tests use a single-node one).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
import ray_tasks
from ray.cluster_utils import Cluster

from hangguard.ray import NodeLost, RemoteGroup, WorkerLost


def wait_pid(path: Path, timeout: float = 90.0) -> int:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        if time.monotonic() > end:
            raise TimeoutError(f"no pid in {path}")
        time.sleep(0.05)
    return int(path.read_text())


def describe(result: object) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(result).__name__, "value": None}
    if isinstance(result, WorkerLost):
        out.update(task=result.task, node=result.node, cause=type(result.__cause__).__name__)
    elif not isinstance(result, BaseException):
        out["value"] = result
    return out


def in_background(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def main() -> None:
    shared = Path(tempfile.mkdtemp(prefix="hangguard-cluster-"))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    doomed = cluster.add_node(num_cpus=1, resources={"doomed": 1}, node_ip_address="127.0.0.1")
    cluster.add_node(num_cpus=1, resources={"victim": 1}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    cluster.connect()
    report: dict[str, Any] = {"doomed_node": doomed.node_id}

    # 1. A node dies while the join waits: its task is NodeLost, the other result stays.
    pid_file = shared / "on-doomed.pid"
    group = RemoteGroup("node lost")
    group.submit(ray_tasks.square, 4)
    group.options(resources={"doomed": 1}, max_retries=0).submit(
        ray_tasks.wait_forever_in_here, str(pid_file)
    )

    def kill_node() -> None:
        wait_pid(pid_file)
        cluster.remove_node(doomed, allow_graceful=False)

    killer = in_background(kill_node)
    started = time.monotonic()
    results = group.join(timeout=90, return_exceptions=True)
    report["node"] = {
        "elapsed": time.monotonic() - started,
        "results": [describe(r) for r in results],
        "is_node_lost": isinstance(results[1], NodeLost),
    }
    killer.join()

    # 2. A worker process dies while the join waits: WorkerLost, the rest kept.
    pid_file = shared / "victim.pid"
    group = RemoteGroup("worker lost")
    group.submit(ray_tasks.square, 5)
    group.options(resources={"victim": 1}, max_retries=0).submit(
        ray_tasks.wait_forever_in_here, str(pid_file)
    )
    killer = in_background(lambda: os.kill(wait_pid(pid_file), signal.SIGKILL))
    started = time.monotonic()
    results = group.join(timeout=90, return_exceptions=True)
    report["worker"] = {
        "elapsed": time.monotonic() - started,
        "results": [describe(r) for r in results],
    }
    killer.join()
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(report), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
