"""Guarded MCP calls: ``hangguard.mcp.McpClient.call_tool`` against the SDK's ``mcp.Client``.

The ``echo`` tool of hangguard's chaos server is called over streamable HTTP on
loopback (the server in a subprocess of its own) and in-process (the server object
handed to the client). The SDK is installed on both sides, as in production, so the
MCP SDK's own spans are made in both variants and only hangguard's cost differs. Each
round makes the same number of sequential calls on one open connection per variant.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ._harness import Config, Row, Target, install_sdk, run_worker, worker_env

__all__ = ["measure", "run", "serve"]

ROUNDS = 11
CALLS = {"http": 200, "in-process": 500}
SMOKE_CALLS = {"http": 20, "in-process": 50}
ARGS = {"text": "hello"}


def serve() -> None:
    """The server process: the SDK installed, then the chaos server over HTTP."""
    install_sdk()
    from hangguard.testing.chaos import main

    main(["--host", "127.0.0.1", "--port", "0"])


@contextlib.contextmanager
def _server() -> Iterator[str]:
    """Start the server subprocess; yield its URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mcp_call", "serve"],
        stdout=subprocess.PIPE,
        text=True,
        env=worker_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the MCP server exited {proc.wait()} before listening")
        yield str(json.loads(line)["url"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def measure(params: dict[str, Any]) -> dict[str, list[float]]:
    """Worker: seconds per call of the raw and the guarded client, one sample per round."""
    import mcp

    import hangguard
    import hangguard.mcp

    calls: int = params["calls"]
    rounds: int = params["rounds"]
    target: Any = params["url"]
    if target is None:
        from hangguard.testing.chaos import build_chaos_server

        target = build_chaos_server()

    async def loop(call: Callable[[], Awaitable[object]], count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await call()
        return (time.perf_counter() - started) / count

    async def main() -> dict[str, list[float]]:
        async with mcp.Client(target) as raw, hangguard.mcp.McpClient(target, timeout=30) as ours:
            variants: dict[str, Callable[[], Awaitable[object]]] = {
                "raw": lambda: raw.call_tool("echo", ARGS),
                "hangguard": lambda: ours.call_tool("echo", ARGS),
            }
            names = list(variants)
            for name in names:
                await loop(variants[name], 5)
            samples: dict[str, list[float]] = {name: [] for name in names}
            for r in range(rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    gc.collect()
                    samples[name].append(await loop(variants[name], calls))
            return samples

    return asyncio.run(main())


def run(cfg: Config) -> list[Row]:
    """HTTP (server in a subprocess) and in-process, SDK installed on both sides."""
    rounds = cfg.rounds_or(ROUNDS)
    calls = SMOKE_CALLS if cfg.smoke else CALLS
    rows: list[Row] = []
    with _server() as url:
        for transport, where in (("http", url), ("in-process", None)):
            n = calls[transport]
            result = run_worker(
                "bench.mcp_call:measure",
                {"calls": n, "rounds": rounds, "url": where},
                provider="sdk",
            )
            size = f"{transport}, {n} calls"
            raw = Row("mcp", size, "mcp.Client.call_tool", "ms/call", _ms(result["raw"]))
            rows.append(raw)
            rows.append(
                Row(
                    "mcp",
                    size,
                    "hangguard.mcp.McpClient.call_tool",
                    "ms/call",
                    _ms(result["hangguard"]),
                    baseline=raw,
                    # The issue sets the target for HTTP; in-process is shown for reference.
                    target=Target("ratio", 1.05) if transport == "http" else None,
                    note="" if transport == "http" else "reference",
                )
            )
    return rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: python -m bench.mcp_call serve")
    serve()
