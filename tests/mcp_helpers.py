"""Fixtures and leak checks for the MCP tests (loaded by conftest as a plugin).

The chaos servers run in threads of their own, one per session and kind, so a test pays
only for its client; each test starts with no fault and an empty event log. The leak
checks look at the process itself: asyncio tasks, client-side TCP sockets (from
/proc/self/fd and /proc/self/net/tcp), and child processes (from /proc/<pid>/stat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hangguard.testing
from hangguard.testing.chaos import ChaosRecorder, ChaosServer
from timing import WIDE_MARGIN

# Real-clock tests: each bounded call must end within its budget plus a wide margin (see
# timing.py); what they guard against hangs, or waits out a client timeout of 30 s.
MARGIN = WIDE_MARGIN


@contextlib.contextmanager
def within(budget: float, margin: float = MARGIN) -> Iterator[Callable[[], float]]:
    """Assert that the block ends within ``budget + margin`` seconds; yields elapsed()."""
    started = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - started

    yield elapsed
    took = elapsed()
    assert took <= budget + margin, f"took {took:.3f}s, budget {budget}s + {margin}s"


# --- leaks -------------------------------------------------------------------------------


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    return inodes


def client_sockets(port: int) -> list[str]:
    """Open sockets of this process connected *to* ``port`` (client side only)."""
    inodes = _socket_inodes()
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                remote, inode = fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                    found.append(f"{fields[1]}->{remote} state {fields[3]}")
    return found


def child_pids() -> dict[int, str]:
    """Child processes of this process (live or zombie), with their state letter."""
    me = os.getpid()
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == me:
                out[int(entry.name)] = state
    return out


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists at all (a zombie counts: it was not reaped)."""
    return Path(f"/proc/{pid}").exists()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    """Wait until ``check()`` holds, re-checking as the loop turns; fail after ``timeout``.

    For state with no event to wait on (a socket the loop closes on its next turn, a
    child the child watcher reaps): it returns as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {what}")
        await asyncio.sleep(0.01)


class LeakCheck:
    """Snapshot tasks and children now; :meth:`verify` that nothing new is left."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.tasks = set(asyncio.all_tasks())
        self.children = set(child_pids())

    def new_tasks(self) -> set[asyncio.Task[Any]]:
        me = asyncio.current_task()
        return {t for t in asyncio.all_tasks() if t not in self.tasks and t is not me}

    async def verify(self) -> None:
        await eventually(lambda: not self.new_tasks(), f"tasks left: {self.new_tasks()}")
        if self.port is not None:
            port = self.port
            await eventually(
                lambda: not client_sockets(port), f"sockets left: {client_sockets(port)}"
            )
        await eventually(
            lambda: not (set(child_pids()) - self.children),
            f"children left: {set(child_pids()) - self.children}",
        )


# --- chaos servers ----------------------------------------------------------------------


def _session_server(request: pytest.FixtureRequest, **kwargs: Any) -> ChaosServer:
    server = ChaosServer(**kwargs).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def _chaos_http(request: pytest.FixtureRequest) -> ChaosServer:
    return _session_server(request)


@pytest.fixture(scope="session")
def _chaos_sse(request: pytest.FixtureRequest) -> ChaosServer:
    return _session_server(request, transport="sse")


def _fresh(server: ChaosServer) -> Iterator[ChaosServer]:
    server.fault = None
    server.recorder.clear()
    yield server
    server.fault = None


@pytest.fixture
def chaos(_chaos_http: ChaosServer) -> Iterator[ChaosServer]:
    """The streamable-HTTP chaos server, with no fault and an empty event log."""
    yield from _fresh(_chaos_http)


@pytest.fixture
def chaos_sse(_chaos_sse: ChaosServer) -> Iterator[ChaosServer]:
    """The SSE chaos server, with no fault and an empty event log."""
    yield from _fresh(_chaos_sse)


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without the waits between attempts (the attempts still happen)."""
    with hangguard.testing.disable_backoff():
        yield


class ChaosProcess:
    """The chaos server as a subprocess (``python -m hangguard.testing.chaos``).

    Its tool events arrive as JSON lines on its stdout and land in ``recorder``, so a
    test can wait until a handler started and then kill the server under it.
    """

    def __init__(self, *args: str) -> None:
        self.args = [sys.executable, "-m", "hangguard.testing.chaos", "--announce", *args]
        self.recorder = ChaosRecorder()
        self.url = ""
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> ChaosProcess:
        self._proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE
        )
        assert self._proc.stdout is not None
        # Importing the mcp server stack takes a second or two on a busy machine.
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        listening = json.loads(line)
        assert listening["event"] == "listening", listening
        self.url = listening["url"]
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            event = json.loads(line)
            self.recorder.record(event.pop("event"), event.pop("tool"), **event)

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGKILL)
        await self._proc.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def chaos_process() -> AsyncIterator[ChaosProcess]:
    """A streamable-HTTP chaos server in a subprocess, killed at the end."""
    async with ChaosProcess() as proc:
        yield proc


# --- the TypeScript reference server (server-everything, through npm and node) ----------

_EVERYTHING_ENV = "HANGGUARD_MCP_EVERYTHING"
_LOOPBACK = Path(__file__).parent / "node" / "loopback.mjs"


def everything_entry() -> str:
    """The entry script of server-everything (``$HANGGUARD_MCP_EVERYTHING``), or skip.

    Missing, it skips with the install command, except under ``CI=true``: a failure.
    """
    entry = os.environ.get(_EVERYTHING_ENV, "")
    problem = None
    if not entry:
        problem = f"{_EVERYTHING_ENV} is unset"
    elif not Path(entry).is_file():
        problem = f"{_EVERYTHING_ENV}={entry!r} is not a file"
    elif shutil.which("node") is None:
        problem = "node is not installed"
    if problem is None:
        return entry
    how = f'{_EVERYTHING_ENV}="$(bash scripts/mcp-everything.sh | tail -n 1)" (needs npm)'
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}: run {how}")
    pytest.skip(f"{problem}: run {how}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NodeServer:
    """server-everything on streamable HTTP at 127.0.0.1, killable and restartable.

    ``posts`` counts the POSTs it received (it logs one line per POST on stdout), across
    restarts on the same port.
    """

    def __init__(self, entry: str, port: int | None = None) -> None:
        self.entry = entry
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.posts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> NodeServer:
        env = {**os.environ, "PORT": str(self.port)}
        self._proc = proc = await asyncio.create_subprocess_exec(
            "node",
            "--import",
            _LOOPBACK.as_uri(),
            self.entry,
            "streamableHttp",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr
        while True:
            line = await asyncio.wait_for(stderr.readline(), 30)
            if not line:
                raise RuntimeError(f"server-everything exited before listening ({proc.returncode})")
            if b"listening on port" in line:
                break
        self._readers = [
            asyncio.create_task(self._count(proc.stdout)),
            asyncio.create_task(self._drain(stderr)),
        ]
        return self

    async def _count(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            if line.startswith(b"Received MCP POST request"):
                self.posts += 1

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for _ in stream:
            pass

    async def kill(self) -> None:
        """SIGKILL, and wait until it is gone (its port is free again)."""
        proc = self._proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        for reader in self._readers:
            await reader
        self._readers = []

    async def restart(self) -> None:
        await self.kill()
        await self.start()


@pytest.fixture
async def everything() -> AsyncIterator[NodeServer]:
    """server-everything (TypeScript SDK) on streamable HTTP, killed at the end."""
    server = await NodeServer(everything_entry()).start()
    try:
        yield server
    finally:
        await server.kill()
