"""A process that hangs on purpose, for the ps, snapshot and termination tests.

    python hang_app.py SCENARIO

Scenarios: ``sleep`` (the event loop blocked in ``time.sleep`` inside an op), ``ignore``
(an op's task that ignores its deadline's cancellation), ``recv`` (a guarded sync op on a
thread, in a loopback ``recv`` that never answers, while the loop waits for it),
``daemon-exit`` (that thread as a daemon, and the main thread returns: a normal exit past
it), ``own-handler`` (``sleep`` with a SIGTERM handler the application installed first),
``untraced`` (``sleep`` with no ``setup_tracing()`` at all). Tracing is set up from the
environment (``OTEL_*``, ``HANGGUARD_*``), except in ``untraced``. It prints ``READY``
once the hang is about to start.
"""

from __future__ import annotations

import asyncio
import linecache
import signal
import socket
import sys
import threading
import time

import hangguard

SCENARIO = sys.argv[1]

if SCENARIO == "own-handler":

    def _own(signum: int, frame: object) -> None:
        print("OWN HANDLER", flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, _own)

if SCENARIO != "untraced":
    hangguard.setup_tracing(service_name=sys.argv[2] if len(sys.argv) > 2 else None)


def _blackhole() -> socket.socket:
    # A loopback socket that accepts and never answers; the client end is returned.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    _keep.append(server)
    return client


_keep: list[socket.socket] = []
_in_recv = threading.Event()
_reader: list[threading.Thread] = []


def _wait_until_in_recv() -> None:
    # _in_recv is set just before the recv: poll the thread's own frame (bounded) until
    # it is on the recv line, so the exit records the hang and not the line before it.
    # The event is set by then, so waiting on it would not yield: sleep between looks,
    # and bound the poll by time, not by count (a loaded machine is slow to switch).
    _in_recv.wait()
    ident = _reader[0].ident
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        frame = sys._current_frames().get(ident or 0)
        while frame is not None and frame.f_code.co_filename != __file__:
            frame = frame.f_back
        if frame is not None and "sock.recv" in linecache.getline(__file__, frame.f_lineno):
            return
        time.sleep(0.001)
    raise SystemExit("the reader thread never reached its recv")


@hangguard.guarded_op(budget=120)
class ReadOp:
    def call(self) -> bytes:
        sock = _blackhole()
        print("READY", flush=True)
        _in_recv.set()
        return sock.recv(1)  # never answers


@hangguard.traced(name="BlockedOp", budget=120)
async def blocked() -> None:
    print("READY", flush=True)
    time.sleep(600)  # noqa: ASYNC251 (the hang under test: the loop blocked)


@hangguard.traced(name="StubbornOp", budget=0.2)
async def stubborn() -> None:
    print("READY", flush=True)
    while True:
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            continue  # ignores its cancellation


@hangguard.traced(name="StubbornTask")
async def ignores_its_cancel() -> None:
    while True:
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            continue


async def detached() -> None:
    # A task that ignores its cancel outlives the join (detached) and then asyncio.run().
    group = hangguard.TaskGroup("detach")
    group.submit_named("StubbornTask", ignores_its_cancel)
    print("READY", flush=True)
    try:
        await group.join(timeout=0.2)
    except hangguard.JoinTimeout:
        print("DETACHED", flush=True)


async def main() -> None:
    if SCENARIO in ("sleep", "own-handler", "untraced"):
        await blocked()
    elif SCENARIO == "ignore":
        await stubborn()
    elif SCENARIO == "recv":
        await asyncio.to_thread(ReadOp().call)
    elif SCENARIO == "detached-exit":
        await detached()
    elif SCENARIO == "daemon-exit":
        reader = threading.Thread(target=ReadOp().call, daemon=True)
        reader.start()
        _reader.append(reader)
        await asyncio.sleep(0)
    else:
        raise SystemExit(f"unknown scenario {SCENARIO!r}")


if __name__ == "__main__":
    asyncio.run(main())
    if SCENARIO == "daemon-exit":
        # A normal exit, past the daemon thread still in recv.
        _wait_until_in_recv()
        print("EXITING", flush=True)
