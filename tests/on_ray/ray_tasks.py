"""Task bodies for the Ray tests, importable by the workers (their PYTHONPATH has this dir).

Each is plain Python; the tests submit them through hangguard.ray.RemoteGroup.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import hangguard


def square(x: int) -> int:
    return x * x


def boom(message: str) -> None:
    raise ValueError(message)


def _write_pid(pid_file: str | None) -> None:
    if pid_file:
        tmp = Path(pid_file + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(pid_file)


def wait_forever_in_here(pid_file: str | None = None) -> None:
    """Hangs, but in Python code: ray.cancel's KeyboardInterrupt stops it."""
    _write_pid(pid_file)
    while True:
        time.sleep(0.05)


def ignore_interrupts(pid_file: str) -> None:
    """Hangs and swallows every KeyboardInterrupt: only force=True stops it."""
    _write_pid(pid_file)
    while True:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass


def budget_seen() -> tuple[float, str | None]:
    current = hangguard.current_deadline()
    return hangguard.remaining(), current.binding().name if current else None


async def budget_seen_async() -> tuple[float, str | None]:
    await asyncio.sleep(0)
    current = hangguard.current_deadline()
    return hangguard.remaining(), current.binding().name if current else None


def crash_once(marker: str) -> str:
    """Kills its own worker on the first attempt, succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(1)
    return "second attempt"


def crash_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(1)


def call_hanging_tool(url: str, reserve: float) -> dict[str, Any]:
    """A nested MCP call (to a tool that never answers) inside the task's budget."""
    from hangguard.mcp import McpClient

    seen = hangguard.remaining()

    async def go() -> None:
        timeout = hangguard.split_budget(600, reserve=reserve)
        async with McpClient(url, timeout=timeout) as client:
            await client.call_tool("hang")

    started = time.monotonic()
    try:
        asyncio.run(go())
    except hangguard.DeadlineExceeded as exc:
        return {"error": type(exc).__name__, "took": time.monotonic() - started, "seen": seen}
    return {"error": None, "took": time.monotonic() - started, "seen": seen}


def item_and_budget(item: str, actor_index: int = 0) -> dict[str, Any]:
    """One item of a fan-out: hangs on ``"hang"``, else reports the budget it saw."""
    if item == "hang":
        wait_forever_in_here()
    return {"item": item, "left": hangguard.remaining()}


class RayShapedOp:
    """The shape of flowllm 0.2's ``BaseRayOp`` (sync ``call`` -> ``execute``; refs kept in
    ``ray_task_list``; a join that ``ray.get``s each and flattens), without flowllm."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.ray_task_list: list[Any] = []
        self.max_workers = 2

    def call(self) -> Any:
        return self.execute()

    def execute(self) -> Any:
        raise NotImplementedError

    def submit_and_join_ray_task(self, fn: Any, parallel_key: str = "", **kwargs: Any) -> Any:
        parallel_list = kwargs.pop(parallel_key)
        self.ray_task_list.clear()
        for i in range(self.max_workers):
            self.submit_ray_task(
                self.ray_task_loop,
                parallel_key=parallel_key,
                parallel_list=parallel_list,
                actor_index=i,
                max_workers=self.max_workers,
                internal_fn=fn,
                **kwargs,
            )
        return self.join_ray_task(task_desc="shaped")

    @staticmethod
    def ray_task_loop(
        parallel_key: str,
        parallel_list: list[Any],
        actor_index: int,
        max_workers: int,
        internal_fn: Any,
        **kwargs: Any,
    ) -> list[Any]:
        result = []
        for value in parallel_list[actor_index::max_workers]:
            kwargs.update({"actor_index": actor_index, parallel_key: value})
            result.append(internal_fn(**kwargs))
        return result

    def submit_ray_task(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import ray

        self.ray_task_list.append(ray.remote(fn).remote(*args, **kwargs))
        return self

    def join_ray_task(self, task_desc: str | None = None) -> list[Any]:
        import ray

        result: list[Any] = []
        for task in self.ray_task_list:
            result.extend(ray.get(task))
        self.ray_task_list.clear()
        return result


def fail_at_stamp(after: float) -> None:
    """Fails ``after`` seconds in, the wall-clock time of the failure in its message."""
    time.sleep(after)
    raise RuntimeError(f"failed at {time.time():.6f}")


def slow(seconds: float, pid_file: str | None = None) -> float:
    _write_pid(pid_file)
    time.sleep(seconds)
    return seconds
