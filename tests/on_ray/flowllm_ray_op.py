"""Run in flowllm 0.2's own environment: a real BaseRayOp subclass under guarded_op.

Prints one JSON line: what a run within budget returned, and how a run with a task that
hangs ended. Started by test_ray_op.py with PYTHONPATH pointing at hangguard's sources.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from flowllm.core.context import C
from flowllm.core.op.base_ray_op import BaseRayOp
from flowllm.core.schema.service_config import ServiceConfig

import hangguard


def work(items: str, actor_index: int) -> dict[str, Any]:
    if items == "hang":
        while True:
            time.sleep(0.05)
    return {"item": items, "left": hangguard.remaining()}


@hangguard.guarded_op(budget=60)
class ItemsRayOp(BaseRayOp):
    def execute(self) -> Any:
        return self.submit_and_join_ray_task(work, items=list(self.op_params["items"]))


@hangguard.guarded_op(budget=4)
class HangingRayOp(ItemsRayOp):
    pass


def main() -> None:
    C.service_config = ServiceConfig(ray_max_workers=2)
    # address="local": a cluster of its own, never another run's that is up on this machine.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    report: dict[str, Any] = {}
    results = ItemsRayOp(raise_exception=True, items=["a", "b", "c"]).call()
    report["ok"] = {"items": [r["item"] for r in results], "left": [r["left"] for r in results]}
    started = time.monotonic()
    try:
        HangingRayOp(raise_exception=True, items=["a", "hang"]).call()
        report["timeout"] = {"error": None}
    except hangguard.JoinTimeout as exc:
        report["timeout"] = {
            "error": type(exc).__name__,
            "elapsed": time.monotonic() - started,
            "first": [r["item"] for r in exc.results[0]],
            "pending": len(exc.pending),
        }
    ray.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
