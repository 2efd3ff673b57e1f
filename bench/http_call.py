"""Guarded httpx requests (``hangguard.http.AsyncDeadlineTransport``) against raw httpx.

A plain Starlette app under uvicorn answers ``GET /`` in a subprocess on loopback; each
round makes the same number of sequential requests on one open client per variant. The
guarded client runs inside a ``hangguard.deadline`` so that its whole path is taken
(timeouts capped, header sent, body bounded); with the SDK installed it also makes its
client span, which raw httpx does not.
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

from ._harness import Config, Row, Target, run_worker, worker_env

__all__ = ["measure", "run", "serve"]

ROUNDS = 11
CALLS = 300
SMOKE_CALLS = 30


def serve() -> None:
    """The server process: a one-route Starlette app under uvicorn, port announced."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    print(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}/"}), flush=True)
    app = Starlette(routes=[Route("/", hello)])
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def _server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http_call", "serve"],
        stdout=subprocess.PIPE,
        text=True,
        env=worker_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the HTTP server exited {proc.wait()} before listening")
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
    """Worker: seconds per request of raw and guarded httpx, one sample per round."""
    import httpx

    import hangguard
    from hangguard.http import AsyncDeadlineTransport

    calls: int = params["calls"]
    rounds: int = params["rounds"]
    url: str = params["url"]

    async def loop(call: Callable[[], Awaitable[object]], count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await call()
        return (time.perf_counter() - started) / count

    async def main() -> dict[str, list[float]]:
        async with (
            httpx.AsyncClient() as raw,
            httpx.AsyncClient(transport=AsyncDeadlineTransport()) as ours,
        ):

            async def guarded() -> object:
                async with hangguard.deadline(30):
                    return await ours.get(url)

            variants: dict[str, Callable[[], Awaitable[object]]] = {
                "raw": lambda: raw.get(url),
                "hangguard": guarded,
            }
            names = list(variants)
            for name in names:
                await loop(variants[name], 10)
            samples: dict[str, list[float]] = {name: [] for name in names}
            for r in range(rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    gc.collect()
                    samples[name].append(await loop(variants[name], calls))
            return samples

    return asyncio.run(main())


def run(cfg: Config) -> list[Row]:
    """Loopback requests, with no OpenTelemetry SDK and with it installed."""
    rounds = cfg.rounds_or(ROUNDS)
    calls = SMOKE_CALLS if cfg.smoke else CALLS
    rows: list[Row] = []
    with _server() as url:
        for provider in ("none", "sdk"):
            result = run_worker(
                "bench.http_call:measure",
                {"calls": calls, "rounds": rounds, "url": url},
                provider=provider,
            )
            size = f"{calls} requests, otel {provider}"
            raw = Row("http", size, "httpx.AsyncClient.get", "ms/req", _ms(result["raw"]))
            rows.append(raw)
            rows.append(
                Row(
                    "http",
                    size,
                    "AsyncDeadlineTransport, in a deadline",
                    "ms/req",
                    _ms(result["hangguard"]),
                    baseline=raw,
                    target=Target("ratio", 1.05) if provider == "none" else None,
                    note="" if provider == "none" else "with its client span",
                )
            )
    return rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: python -m bench.http_call serve")
    serve()
