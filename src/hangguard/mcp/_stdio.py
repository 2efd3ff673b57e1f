"""A stdio transport that ends its MCP server promptly, on every path.

The SDK's own stdio client shuts a server down politely (close stdin, 2 s, SIGTERM, 2 s,
SIGKILL), and a second cancellation during that can hang in its stdout drain and leave
the child orphaned. Here the server runs in a process group of its own; a normal close
is polite within a bounded grace, and any abnormal exit (an exception, a deadline, a
cancellation) kills the whole group at once. Either way the child is reaped, shielded
from cancellation, before the transport's context exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

import anyio
import anyio.abc
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.text import TextReceiveStream
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

from ._target import Target

__all__ = ["stdio_transport"]

logger = logging.getLogger("hangguard.mcp")

# Polling interval while a stopped stdio server is reaped (asyncio offers no portable
# exit notification that does not also wait for the pipes to close).
_REAP_POLL = 0.005
_REAP_TIMEOUT = 2.0


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":  # pragma: no cover
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)


async def _reaped(process: anyio.abc.Process, timeout: float) -> bool:
    # Not process.wait(): on 3.11 it also waits for every pipe to close, which a
    # grandchild that inherited them can hold open forever.
    with anyio.move_on_after(timeout):
        while process.returncode is None:  # noqa: ASYNC110 (no exit event to wait on)
            await anyio.sleep(_REAP_POLL)
    return process.returncode is not None


async def _stop(process: anyio.abc.Process, *, polite: bool, grace: float) -> None:
    pid = process.pid
    if process.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    if polite and process.returncode is None and not await _reaped(process, grace):
        _kill_group(pid, signal.SIGTERM)
        await _reaped(process, grace)
    # The whole group: a server's own children die with it even when it has exited.
    _kill_group(pid, signal.SIGKILL)
    if not await _reaped(process, _REAP_TIMEOUT):
        logger.warning("MCP stdio server (pid %d) survived SIGKILL; abandoning it", pid)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await pipe.aclose()
    # The asyncio subprocess transport stays open (and warns when collected) while a
    # pipe end survives; nothing public closes it.
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        with contextlib.suppress(PermissionError):
            close()


@contextlib.asynccontextmanager
async def stdio_transport(
    target: Target,
    *,
    grace: float,
    stderr: int | IO[Any] | None = None,
    on_spawn: Callable[[int], None] | None = None,
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Run the server command in a process group of its own and talk over its stdio.

    On a normal exit: close its stdin, give it ``grace`` seconds, SIGTERM the group, give
    it ``grace`` more, SIGKILL. On an exception or cancellation: SIGKILL the group at once.
    Either way the child is reaped before this returns, shielded from cancellation.
    """
    assert target.command is not None
    env = {**get_default_environment(), **(target.env or {})}
    process = await anyio.open_process(
        [target.command, *target.args],
        env=env,
        cwd=target.cwd,
        stderr=stderr,
        start_new_session=True,
    )
    if on_spawn is not None:
        on_spawn(process.pid)
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def stdout_reader() -> None:
        assert process.stdout is not None
        buffer = ""
        async with read_writer:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                async for chunk in TextReceiveStream(process.stdout):
                    lines = (buffer + chunk).split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        if line.strip():
                            await read_writer.send(_parse_line(line))

    async def stdin_writer() -> None:
        assert process.stdin is not None
        async with write_reader:
            try:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send((data + "\n").encode())
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                # The server stopped reading: end the session instead of hanging a request.
                await read_writer.aclose()

    polite = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdout_reader)
            tg.start_soon(stdin_writer)
            try:
                yield read_stream, write_stream
                polite = True
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process, polite=polite, grace=grace)
            for stream in (read_stream, write_stream, read_writer, write_reader):
                await stream.aclose()


def _parse_line(line: str) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        logger.warning("MCP stdio server wrote a line that is not JSON-RPC: %.200r", line)
        return exc
