# ruff: noqa: SIM117  (nested withs keep the timed block apart from the setup)
"""hangguard.http under the real ``openai`` package, and a server that restarts.

The OpenAI-compatible server is a Starlette app on 127.0.0.1 that counts what it received;
the restarting server is a real process, killed and started again on the same port.
Backoff stays on here (the connect retries are bounded by time only with real waits).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import hangguard
from hangguard.http import AsyncDeadlineTransport, DeadlineTransport
from mcp_helpers import within
from test_http import serve
from timing import WIDE_MARGIN


def _openai() -> ModuleType:
    """The ``openai`` package, or skip with the install command (a failure under CI=true)."""
    try:
        return importlib.import_module("openai")
    except ImportError:
        how = "pip install openai"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but openai is not installed: run {how}")
        pytest.skip(f"openai is not installed: run {how}")


class FakeOpenAI:
    """``POST /v1/chat/completions`` answering ``status`` (with ``headers``) every time."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.retry_counts: list[str | None] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        with self.lock:
            self.retry_counts.append(request.headers.get("x-stainless-retry-count"))
        return JSONResponse(
            {"error": {"message": "busy", "type": "server_error"}},
            status_code=self.status,
            headers=self.headers,
        )


def _ask(client: Any) -> Any:
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_sync_openai_and_the_transport_send_three_requests_to_a_503_not_nine() -> None:
    openai = _openai()
    server = FakeOpenAI(503)
    with serve(server.app) as url:
        with (
            openai.OpenAI(
                base_url=f"{url}/v1",
                api_key="k",
                http_client=httpx.Client(transport=DeadlineTransport()),
            ) as client,
            hangguard.deadline(30),
            pytest.raises(openai.InternalServerError),
        ):
            _ask(client)
    # openai's default max_retries=2: three tries, each one request.
    assert server.retry_counts == ["0", "1", "2"]


async def test_async_openai_and_the_transport_send_three_requests_to_a_503_not_nine() -> None:
    openai = _openai()
    server = FakeOpenAI(503)
    with serve(server.app) as url:
        async with (
            openai.AsyncOpenAI(
                base_url=f"{url}/v1",
                api_key="k",
                http_client=httpx.AsyncClient(transport=AsyncDeadlineTransport()),
            ) as client,
            hangguard.deadline(30),
        ):
            with pytest.raises(openai.InternalServerError):
                await _ask(client)
    assert server.retry_counts == ["0", "1", "2"]


def test_without_the_sdks_header_the_transport_retries_a_503_itself() -> None:
    server = FakeOpenAI(503)
    with serve(server.app) as url, httpx.Client(transport=DeadlineTransport()) as client:
        with hangguard.deadline(30):
            response = client.post(f"{url}/v1/chat/completions", content=b"{}")
    assert response.status_code == 503
    assert server.retry_counts == [None, None, None]


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_sync_openai_does_not_sleep_a_long_retry_after_past_the_deadline(header: str) -> None:
    openai = _openai()
    server = FakeOpenAI(429, {header: "10" if header == "retry-after" else "10000"})
    budget = 2.0
    with serve(server.app) as url:
        with openai.OpenAI(
            base_url=f"{url}/v1",
            api_key="k",
            http_client=httpx.Client(transport=DeadlineTransport()),
        ) as client:
            # Without the cap openai sleeps the full 10 s; the margin stays below that.
            with within(budget, margin=min(WIDE_MARGIN, 6.0)) as elapsed:
                with hangguard.deadline(budget), pytest.raises(hangguard.DeadlineExceeded):
                    _ask(client)
            assert elapsed() >= budget * 0.9  # it waited for the hint, up to the deadline
    # The try after the wait found no time left and was not sent.
    assert server.retry_counts == ["0"]


def test_a_retry_after_that_fits_is_handed_back_unchanged() -> None:
    server = FakeOpenAI(429, {"retry-after": "1"})
    with serve(server.app) as url, httpx.Client(transport=DeadlineTransport(retry=1)) as client:
        with hangguard.deadline(30):
            response = client.post(f"{url}/v1/chat/completions", content=b"{}")
    assert response.headers["retry-after"] == "1"
    assert "retry-after-ms" not in response.headers


_COUNTING_SERVER = """
import http.server, json, sys
served = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        served += 1
        body = json.dumps({"served": served}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _start(port: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _COUNTING_SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the socket listens
    assert line.strip(), "the counting server did not start"
    return proc, int(line)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def restarting() -> Iterator[tuple[str, list[subprocess.Popen[str]], threading.Event]]:
    """A server killed before the test's call and started again on its port 2 s later."""
    first, port = _start(0)
    _kill(first)
    procs: list[subprocess.Popen[str]] = []
    back = threading.Event()

    def restart() -> None:
        proc, _ = _start(port)
        procs.append(proc)
        back.set()

    timer = threading.Timer(2.0, restart)
    timer.start()
    try:
        yield f"http://127.0.0.1:{port}", procs, back
    finally:
        timer.cancel()
        timer.join(30)
        for proc in procs:
            _kill(proc)


def test_a_server_restarted_within_the_budget_serves_the_sync_call(
    restarting: tuple[str, list[subprocess.Popen[str]], threading.Event],
) -> None:
    url, _, back = restarting
    started = time.monotonic()
    with httpx.Client(transport=DeadlineTransport()) as client, hangguard.deadline(8):
        response = client.get(f"{url}/item")
    assert back.is_set() and time.monotonic() - started >= 1.5
    assert response.json() == {"served": 1}  # the restarted server got exactly one request


async def test_a_server_restarted_within_the_budget_serves_the_async_call(
    restarting: tuple[str, list[subprocess.Popen[str]], threading.Event],
) -> None:
    url, _, back = restarting
    async with httpx.AsyncClient(transport=AsyncDeadlineTransport()) as client:
        async with hangguard.deadline(8):
            response = await client.get(f"{url}/item")
    assert back.is_set()
    assert response.json() == {"served": 1}
