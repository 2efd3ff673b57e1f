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
