"""hangguard.http on real servers: uvicorn apps on 127.0.0.1 that hang, drip, fail, reset.

The client side is httpx with :class:`AsyncDeadlineTransport` / :class:`DeadlineTransport`;
the server side is a Starlette app behind :class:`AsgiDeadlineMiddleware`. Every wait is
on an event; wall-clock asserts are only "within the budget plus a wide margin".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import hangguard
from hangguard.http import (
    TIMEOUT_HEADER,
    AsgiDeadlineMiddleware,
    AsyncDeadlineTransport,
    DeadlineTransport,
)
from mcp_helpers import within

BUDGET = 1.0

pytestmark = pytest.mark.usefixtures("no_backoff")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


@contextlib.contextmanager
def serve(app: Any, *, lifespan: bool = False) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    ready = threading.Event()
    server = _Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on" if lifespan else "off",
            timeout_graceful_shutdown=1,
        ),
        ready,
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30) and server.started, "the test server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Backend:
    """A Starlette app with misbehaving routes, and a log of what its handlers did."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.cancelled: dict[str, threading.Event] = {}
        self.next_hop: str | None = None
        routes = [
            Route("/hang", self.hang, methods=["GET", "POST"]),
            Route("/slow", self.slow),
            Route("/status/{code:int}", self.status, methods=["GET", "POST"]),
            Route("/retry-after/{seconds:int}", self.retry_after),
            Route("/reset", self.reset),
            Route("/drip", self.drip),
            Route("/budget", self.budget),
            Route("/hop", self.hop),
        ]
        self.app = Starlette(routes=routes)

    def count(self, name: str) -> int:
        with self.lock:
            self.calls[name] = n = self.calls.get(name, 0) + 1
        self.started.setdefault(name, threading.Event()).set()
        return n

    def event(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        with self.lock:
            return table.setdefault(name, threading.Event())

    async def hang(self, request: Request) -> Response:
        self.count("hang")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.event(self.cancelled, "hang").set()
            raise
        raise AssertionError("unreachable")

    async def slow(self, request: Request) -> Response:
        self.count("slow")
        await asyncio.sleep(float(request.query_params["seconds"]))
        return JSONResponse({"ok": True})

    async def status(self, request: Request) -> Response:
        # Fails with the code the first `first` times, then answers 200.
        n = self.count("status")
        first = int(request.query_params.get("first", "1000"))
        if n <= first:
            return Response("busy", status_code=request.path_params["code"])
        return JSONResponse({"call": n})

    async def retry_after(self, request: Request) -> Response:
        n = self.count("retry-after")
        if n == 1:
            return Response(
                "slow down",
                status_code=429,
                headers={"retry-after": str(request.path_params["seconds"])},
            )
        return JSONResponse({"call": n})

    async def reset(self, request: Request) -> Response:
        n = self.count("reset")
        if n == 1:

            async def body() -> AsyncIterator[bytes]:
                yield b'{"partial": '
                raise ConnectionResetError("dropped mid-body")

            return StreamingResponse(body(), media_type="application/json")
        return JSONResponse({"call": n})

    async def drip(self, request: Request) -> Response:
        self.count("drip")

        async def body() -> AsyncIterator[bytes]:
            while True:
                yield b"."
                await asyncio.sleep(0.05)

        return StreamingResponse(body(), media_type="text/plain")

    async def budget(self, request: Request) -> Response:
        self.count("budget")
        left = hangguard.remaining()
        return JSONResponse(
            {
                "remaining_s": None if left == float("inf") else left,
                "header": request.headers.get(TIMEOUT_HEADER),
            }
        )

    async def hop(self, request: Request) -> Response:
        # Service A: calls service B with what is left of its own budget.
        assert self.next_hop is not None
        mine = hangguard.remaining()
        async with httpx.AsyncClient(transport=AsyncDeadlineTransport()) as client:
            response = await client.get(f"{self.next_hop}/budget")
        return JSONResponse({"a_remaining_s": mine, "b": response.json()})


@pytest.fixture
def backend() -> Iterator[tuple[Backend, str]]:
    b = Backend()
    with serve(AsgiDeadlineMiddleware(b.app, max_timeout=30)) as url:
        yield b, url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AsyncDeadlineTransport()) as c:
        yield c


def client_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]


# --- the client transport ---------------------------------------------------------------


async def test_a_hanging_server_ends_at_the_deadline_and_its_handler_is_cancelled(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    b, url = backend
    with within(BUDGET), pytest.raises(hangguard.DeadlineExceeded):
        async with hangguard.deadline(BUDGET, name="search"):
            await client.get(f"{url}/hang")
    # The server ran the handler under the budget the header carried, so it stopped too.
    assert await asyncio.to_thread(b.event(b.cancelled, "hang").wait, 10)


def test_sync_client_is_bounded_by_the_deadline_it_cannot_enforce_itself(
    backend: tuple[Backend, str],
) -> None:
    _, url = backend
    # No header: the server would answer 504 at the budget, and this is about the client.
    with (
        httpx.Client(transport=DeadlineTransport(send_header=False)) as client,
        within(BUDGET),
        pytest.raises(httpx.ReadTimeout),
        hangguard.deadline(BUDGET),
    ):
        client.get(f"{url}/hang")


async def test_a_slow_body_is_cut_at_the_deadline_though_each_read_is_quick(
    backend: tuple[Backend, str],
) -> None:
    _, url = backend
    transport = AsyncDeadlineTransport(send_header=False)  # the client's bound alone
    async with httpx.AsyncClient(transport=transport) as client:
        with within(BUDGET), pytest.raises(hangguard.DeadlineExceeded):
            async with hangguard.deadline(BUDGET):
                await client.get(f"{url}/drip")


async def test_a_body_read_after_its_deadline_scope_ended_is_still_cut_at_the_deadline(
    backend: tuple[Backend, str],
) -> None:
    # Inside the scope the scope's own timer bounds the read; read later (a streamed
    # response handed out of the block), the body keeps a timer of its own.
    _, url = backend
    transport = AsyncDeadlineTransport(send_header=False)
    async with httpx.AsyncClient(transport=transport) as client:
        with within(BUDGET):
            async with hangguard.deadline(BUDGET):
                request = client.build_request("GET", f"{url}/drip")
                response = await client.send(request, stream=True)
            try:
                with pytest.raises(hangguard.DeadlineExceeded, match="response body"):
                    await response.aread()
            finally:
                await response.aclose()


def test_sync_slow_body_is_cut_at_the_deadline(backend: tuple[Backend, str]) -> None:
    _, url = backend
    # No header: the server would cut the stream at the same budget (a race to see first).
    with (
        httpx.Client(transport=DeadlineTransport(send_header=False)) as client,
        within(BUDGET),
        pytest.raises(hangguard.DeadlineExceeded, match="response body"),
        hangguard.deadline(BUDGET),
    ):
        client.get(f"{url}/drip")


async def test_the_time_left_travels_in_the_header_and_becomes_the_servers_deadline(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    _, url = backend
    async with hangguard.deadline(5):
        body = (await client.get(f"{url}/budget")).json()
    assert 0 < int(body["header"]) <= 5000
    assert 0 < body["remaining_s"] <= 5.0
    # Without a deadline nothing is sent, and the server's maximum is the budget.
    body = (await client.get(f"{url}/budget")).json()
    assert body["header"] is None and 29 < body["remaining_s"] <= 30


async def test_slow_within_the_budget_succeeds(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    _, url = backend
    async with hangguard.deadline(10):
        response = await client.get(f"{url}/slow", params={"seconds": 0.05})
    assert response.json() == {"ok": True}


async def test_503_then_ok_is_retried_within_the_budget(
    backend: tuple[Backend, str], client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    b, url = backend
    async with hangguard.deadline(5):
        response = await client.post(f"{url}/status/503", params={"first": 2}, content=b"{}")
    assert response.status_code == 200 and response.json() == {"call": 3}
    assert b.calls["status"] == 3
    (span,) = client_spans(spans)
    assert span.attributes is not None
    assert span.attributes["http.request.resend_count"] == 2
    assert span.attributes["http.response.status_code"] == 200
    assert sum(e.name == "hangguard.retry" for e in span.events) == 2


async def test_a_gateway_error_is_retried_for_get_but_not_for_post(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    b, url = backend
    response = await client.get(f"{url}/status/502", params={"first": 1})
    assert response.status_code == 200
    b.calls.clear()
    response = await client.post(f"{url}/status/502", params={"first": 1}, content=b"x")
    assert response.status_code == 502  # the POST may have run upstream: returned as is
    assert b.calls["status"] == 1


async def test_429_retry_after_is_honoured_when_it_fits_the_budget(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    b, url = backend
    async with hangguard.deadline(5):
        response = await client.get(f"{url}/retry-after/1")
    assert response.status_code == 200 and b.calls["retry-after"] == 2


async def test_429_retry_after_longer_than_the_budget_returns_the_429_at_once(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    b, url = backend
    with within(BUDGET):
        async with hangguard.deadline(BUDGET):
            response = await client.get(f"{url}/retry-after/30")
    assert response.status_code == 429 and b.calls["retry-after"] == 1


async def test_a_reset_mid_body_reaches_the_caller_as_with_raw_httpx(
    backend: tuple[Backend, str], client: httpx.AsyncClient
) -> None:
    b, url = backend
    async with hangguard.deadline(5):
        with pytest.raises(httpx.RemoteProtocolError):
            # The body is read after the transport returned: the first reset reaches
            # the caller, as with raw httpx; a retry needs the read inside the attempt.
            await client.get(f"{url}/reset")
        response = await client.get(f"{url}/reset")
    assert response.json() == {"call": 2} and b.calls["reset"] == 2


async def test_a_refused_connection_is_retried_then_raised_for_any_method(
    client: httpx.AsyncClient, closed_port: str, spans: InMemorySpanExporter
) -> None:
    with within(BUDGET), pytest.raises(httpx.ConnectError):
        async with hangguard.deadline(BUDGET):
            await client.post(f"http://{closed_port}/x", content=b"{}")
    (span,) = client_spans(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert sum(e.name == "hangguard.retry" for e in span.events) == 2


async def test_no_span_of_its_own_when_an_instrumentation_wraps_the_transport(
    backend: tuple[Backend, str], spans: InMemorySpanExporter
) -> None:
    _, url = backend

    class Instrumented(httpx.AsyncHTTPTransport):
        pass

    inner = Instrumented()
    original = inner.handle_async_request

    async def wrapped(request: httpx.Request) -> httpx.Response:
        return await original(request)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]  # what wrapt leaves
    inner.handle_async_request = wrapped  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=AsyncDeadlineTransport(inner)) as client:
        await client.get(f"{url}/budget")
    assert client_spans(spans) == []


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="retry"):
        AsyncDeadlineTransport(retry="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transport"):
        AsyncDeadlineTransport(httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_retry_after"):
        DeadlineTransport(max_retry_after=-1)
    with pytest.raises(ValueError, match="max_timeout"):
        AsgiDeadlineMiddleware(Starlette(), max_timeout=-1)


# --- the server middleware --------------------------------------------------------------


async def test_the_server_answers_504_with_a_clear_body_when_the_budget_runs_out(
    backend: tuple[Backend, str],
) -> None:
    b, url = backend
    async with httpx.AsyncClient() as raw:  # plain httpx, the header set by hand
        with within(BUDGET):
            response = await raw.get(f"{url}/hang", headers={TIMEOUT_HEADER: "300"})
    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "deadline_exceeded" and body["budget_s"] == 0.3
    assert "GET /hang" in body["detail"] and TIMEOUT_HEADER in body["detail"]
    assert await asyncio.to_thread(b.event(b.cancelled, "hang").wait, 10)


async def test_the_servers_maximum_caps_what_a_caller_asks_for() -> None:
    b = Backend()
    with serve(AsgiDeadlineMiddleware(b.app, max_timeout=0.2)) as url:
        async with httpx.AsyncClient() as raw:
            body = (await raw.get(f"{url}/budget", headers={TIMEOUT_HEADER: "60000"})).json()
            assert body["remaining_s"] <= 0.2
            response = await raw.get(f"{url}/hang", headers={TIMEOUT_HEADER: "60000"})
    assert response.status_code == 504 and "max_timeout" in response.json()["detail"]


async def test_a_malformed_header_is_answered_400_naming_it(
    backend: tuple[Backend, str],
) -> None:
    _, url = backend
    async with httpx.AsyncClient() as raw:
        response = await raw.get(f"{url}/budget", headers={TIMEOUT_HEADER: "soon"})
    assert response.status_code == 400 and TIMEOUT_HEADER in response.json()["detail"]


async def test_envoys_header_is_read_when_ours_is_absent(backend: tuple[Backend, str]) -> None:
    _, url = backend
    async with httpx.AsyncClient() as raw:
        response = await raw.get(
            f"{url}/budget", headers={"x-envoy-expected-rq-timeout-ms": "2000"}
        )
    assert 0 < response.json()["remaining_s"] <= 2.0


# --- two hops ---------------------------------------------------------------------------


async def test_a_two_hop_chain_passes_the_budget_on_and_shares_one_trace(
    spans: InMemorySpanExporter,
) -> None:
    a, b = Backend(), Backend()
    with (
        serve(AsgiDeadlineMiddleware(b.app, max_timeout=30)) as url_b,
        serve(AsgiDeadlineMiddleware(a.app, max_timeout=30)) as url_a,
    ):
        a.next_hop = url_b
        async with (
            httpx.AsyncClient(transport=AsyncDeadlineTransport()) as client,
            hangguard.deadline(5, name="chain"),
        ):
            body = (await client.get(f"{url_a}/hop")).json()
    a_left, b_left = body["a_remaining_s"], body["b"]["remaining_s"]
    # B sees what A had left, less the hop: never more, and not much less.
    assert 0 < b_left <= a_left <= 5.0
    assert a_left - b_left < 1.0
    finished = spans.get_finished_spans()
    kinds = [(s.kind, s.attributes.get("url.path") if s.attributes else None) for s in finished]
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(servers) == 2 and len(clients) == 2, kinds
    assert len({s.context.trace_id for s in finished}) == 1
    # client -> A's server span -> A's client span -> B's server span.
    by_id = {s.context.span_id: s for s in finished}
    b_server = next(s for s in servers if s.attributes and s.attributes["url.path"] == "/budget")
    assert b_server.parent is not None
    a_client = by_id[b_server.parent.span_id]
    assert a_client.kind is SpanKind.CLIENT and a_client.parent is not None
    a_server = by_id[a_client.parent.span_id]
    assert a_server.kind is SpanKind.SERVER and a_server.parent is not None
    assert by_id[a_server.parent.span_id].kind is SpanKind.CLIENT


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless-json"])
async def test_the_middleware_in_front_of_an_mcp_streamable_http_app(stateless: bool) -> None:
    import hangguard.mcp
    from hangguard.testing.chaos import build_chaos_server

    server = build_chaos_server()
    app = server.streamable_http_app(stateless_http=stateless, json_response=stateless)
    # The SDK's app needs its lifespan (the session manager); uvicorn runs it here.
    with serve(AsgiDeadlineMiddleware(app, max_timeout=30), lifespan=True) as url:
        async with hangguard.mcp.McpClient(f"{url}/mcp", timeout=10) as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"text": "through"})
    assert "echo" in {t.name for t in tools}
    assert result.structured_content == {"result": "through"}


def _doc_examples() -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "http.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_doc_examples())))
def test_the_examples_in_docs_http_md_run_as_written(index: int) -> None:
    import subprocess
    import sys

    code = _doc_examples()[index]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the example printed nothing"


class _CountingTransport(httpx.HTTPTransport):
    """A real transport that counts its closes."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_closing_the_client_closes_the_wrapped_transport() -> None:
    # Before, the sync transport kept the base class's no-op close(): the wrapped pool's
    # sockets stayed open until garbage collection.
    inner = _CountingTransport()
    with httpx.Client(transport=DeadlineTransport(inner)):
        pass
    assert inner.closed == 1
