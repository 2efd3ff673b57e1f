"""Run in the flowllm 0.2 interpreter (see tests/test_flowllm.py): real ``BaseOp`` subclasses
guarded by this checkout's hangguard. Prints one JSON object with what the test checks.

A stuck thread task reads from a loopback socket that accepts and never answers; the
sockets are shut down at the end so flowllm's (non-daemon) pool threads can exit.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flowllm.core.context import C
from flowllm.core.op.base_op import BaseOp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hangguard

server = socket.create_server(("127.0.0.1", 0))
accepted: list[socket.socket] = []
clients: list[socket.socket] = []


def serve() -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        accepted.append(conn)


threading.Thread(target=serve, daemon=True).start()
PORT = server.getsockname()[1]


def stuck_read() -> bytes:
    s = socket.create_connection(("127.0.0.1", PORT))
    clients.append(s)
    return s.recv(1)  # never answered


def search(query: str) -> list[str]:
    return [f"{query}-1", f"{query}-2"]


def shaped(i: int) -> Any:
    # Lists and falsy values: flowllm's inline path (multithreading off) fails on others.
    return [[i, i * 10], 0, None, []][i % 4]


class FanOutOp(BaseOp):
    def execute(self) -> Any:
        for i in range(10):
            self.submit_task(shaped, i)
        return self.join_task()


@hangguard.guarded_op
class GuardedFanOutOp(FanOutOp):
    pass


@hangguard.guarded_op
class HangingSearchOp(BaseOp):
    def execute(self) -> Any:
        self.submit_task(search, "a")
        self.submit_task(stuck_read)
        return self.join_task()


def main() -> None:
    C.thread_pool = ThreadPoolExecutor(max_workers=4)
    out: dict[str, Any] = {}
    out["equivalent"] = {
        str(mt): [
            FanOutOp(enable_multithread=mt).call(),
            GuardedFanOutOp(enable_multithread=mt).call(),
        ]
        for mt in (True, False)
    }
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with hangguard.use_providers(tracer_provider=provider):
        started = time.monotonic()
        try:
            HangingSearchOp(raise_exception=True).call()
            out["error"] = None
        except hangguard.JoinTimeout as exc:
            out["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "deadline": exc.deadline_name,
                "first": exc.results[0],
            }
        out["elapsed"] = time.monotonic() - started
    spans = exporter.get_finished_spans()
    out["spans"] = [
        {
            "name": s.name,
            "attributes": {
                k: v
                for k, v in (s.attributes or {}).items()
                if isinstance(v, (str, int, float, bool))
            },
            "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in s.events],
        }
        for s in spans
    ]
    print(json.dumps(out))
    sys.stdout.flush()
    for s in clients:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    C.thread_pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
