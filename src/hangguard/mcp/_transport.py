"""Where an MCP client connects and how: the target, the HTTP client, SSE writes.

Three jobs the mcp SDK leaves to its caller:

* knowing what really happened on the wire: the SDK folds every HTTP error into one
  JSON-RPC code, so the HTTP client here notes the status, content type and transport
  exception of each request in the :class:`Exchange` of the call that sent it (the SDK
  runs each outgoing message in its sender's context, which is how it is found);
* bounding the requests the SDK sends on its own (cancellation notices, the session
  DELETE), which no caller's deadline covers;
* writes that never block the caller where the SDK's writer waits for each POST
  (:func:`buffered_writes`).

The stdio transport is in ``_mcp_stdio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import shlex
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import httpx2
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from .._exceptions import ConfigError

__all__ = [
    "Exchange",
    "buffered_writes",
    "Target",
    "TransportName",
    "current_exchange",
    "open_http_client",
    "resolve_target",
    "sse_client_factory",
]

logger = logging.getLogger("hangguard.mcp")

TransportName = Literal["streamable-http", "sse", "stdio", "in-process"]
_TRANSPORT_ALIASES: Mapping[str, TransportName] = {
    "streamable-http": "streamable-http",
    "streamable_http": "streamable-http",
    "streamablehttp": "streamable-http",
    "http": "streamable-http",
    "sse": "sse",
    "stdio": "stdio",
    "in-process": "in-process",
}

# Requests the SDK sends on its own (notifications, the session DELETE): nobody waits for
# them under a deadline, and one stuck on a dead server blocks the SDK's writer.
_SIDE_REQUEST_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A resolved MCP server: how to reach it and how to name it in messages and spans."""

    transport: TransportName
    label: str
    url: str | None = None
    headers: Mapping[str, str] | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    address: str | None = None
    port: int | None = None
    instance: object = None


def _normalise_transport(value: object, param: str) -> TransportName | Literal["auto"]:
    if not isinstance(value, str):
        raise TypeError(f"{param} must be a string, got {value!r}")
    key = value.strip().lower()
    if key == "auto":
        return "auto"
    if key not in _TRANSPORT_ALIASES:
        raise ValueError(
            f"{param} must be 'auto', 'streamable-http', 'sse', 'stdio' or 'in-process', "
            f"got {value!r}"
        )
    return _TRANSPORT_ALIASES[key]


def _public_url(url: str) -> tuple[str, str | None, int | None]:
    """The URL without credentials or query (for messages), its host and its port."""
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), host, port


def _str_map(value: object, param: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{param} must be a mapping of strings to strings, got {value!r}")
    return dict(value)


def resolve_target(
    server: object,
    *,
    name: str | None,
    config: Mapping[str, Any] | None,
    transport: str,
    headers: Mapping[str, str] | None,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
) -> Target:
    """Work out the server from ``McpClient``'s arguments; errors name the argument at fault.

    ``server`` is a URL, a command line as a sequence of strings, an object with
    ``command``/``args``/``env``/``cwd`` (the SDK's ``StdioServerParameters``), an
    ``MCPServer`` or low-level ``Server`` to run in-process, or one entry of an
    ``mcpServers`` config. Without it, ``config[name]`` (or
    ``config["mcpServers"][name]``) is used, as in the seed's ``McpClient(name=, config=)``.
    """
    chosen = _normalise_transport(transport, "transport")
    source = "server"
    from mcp.server import Server
    from mcp.server.mcpserver import MCPServer

    if isinstance(server, (Server, MCPServer)):
        if chosen not in ("auto", "in-process"):
            raise ValueError(f"transport={transport!r} needs a URL or command, not a server object")
        return Target(transport="in-process", label=f"in-process:{server.name}", instance=server)
    if server is None:
        if config is None or name is None:
            raise TypeError("McpClient needs a server (URL or command), or name= and config=")
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {config!r}")
        servers = config.get("mcpServers", config)
        if not isinstance(servers, Mapping) or name not in servers:
            known = sorted(servers) if isinstance(servers, Mapping) else []
            raise ConfigError(
                f"config has no MCP server named {name!r} (known: {known})",
                name="config",
                value=name,
            )
        server = servers[name]
        source = f"config[{name!r}]"
    env_map = _str_map(env, "env")
    header_map = _str_map(headers, "headers")
    if isinstance(server, Mapping):
        entry = dict(server)
        declared = entry.get("transport", entry.get("type"))
        if declared is not None and chosen == "auto":
            chosen = _normalise_transport(declared, f"{source}['transport']")
        if "url" in entry:
            header_map = {
                **(_str_map(entry.get("headers"), f"{source}['headers']") or {}),
                **(header_map or {}),
            }
            server = entry["url"]
        elif "command" in entry:
            args = entry.get("args", [])
            if isinstance(args, str) or not isinstance(args, Sequence):
                raise TypeError(f"{source}['args'] must be a list of strings, got {args!r}")
            env_map = {**(_str_map(entry.get("env"), f"{source}['env']") or {}), **(env_map or {})}
            cwd = cwd if cwd is not None else entry.get("cwd")
            server = [entry["command"], *args]
        else:
            raise ValueError(f"{source} must have a 'url' or a 'command', got keys {sorted(entry)}")
    elif not isinstance(server, (str, bytes, Sequence)) and isinstance(
        getattr(server, "command", None), str
    ):
        env_map = {**(getattr(server, "env", None) or {}), **(env_map or {})}
        cwd = cwd if cwd is not None else getattr(server, "cwd", None)
        server = [server.command, *(getattr(server, "args", None) or [])]  # type: ignore[attr-defined]

    if isinstance(server, str):
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{source} must be an http(s) URL or a command as a list of strings, got "
                f"{server!r} (for a command line use shlex.split)"
            )
        if chosen == "stdio":
            raise ValueError(f"transport='stdio' needs a command, but {source} is a URL")
        if chosen == "auto":
            chosen = "sse" if parts.path.rstrip("/").endswith("/sse") else "streamable-http"
        label, host, port = _public_url(server)
        return Target(
            transport=chosen,
            label=label,
            url=server,
            headers=header_map,
            address=host,
            port=port,
        )
    if isinstance(server, Sequence) and not isinstance(server, bytes):
        argv = list(server)
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise TypeError(
                f"{source} as a command must be a non-empty list of strings, got {server!r}"
            )
        if chosen not in ("auto", "stdio"):
            raise ValueError(f"transport={transport!r} needs a URL, but {source} is a command")
        return Target(
            transport="stdio",
            label=shlex.join(argv),
            command=argv[0],
            args=tuple(argv[1:]),
            env=env_map,
            cwd=None if cwd is None else os.fspath(cwd),
        )
    raise TypeError(
        f"{source} must be a URL, a command (list of strings) or a config entry, got {server!r}"
    )


@dataclass(slots=True)
class Exchange:
    """What the HTTP layer saw while one connect or call attempt was in flight.

    ``status`` and ``content_type`` are those of the first response that was an HTTP
    error or not JSON-RPC at all; ``error`` is the first transport exception. With
    ``task`` set (SSE, where the SDK loses such failures and the call would wait for an
    answer that cannot come), that task is cancelled at the first failure and ``aborted``
    is set, so the attempt can fail at once.
    """

    status: int | None = None
    content_type: str | None = None
    error: BaseException | None = None
    task: asyncio.Task[Any] | None = None
    aborted: bool = False
    requests: int = 0
    _armed: asyncio.Task[Any] | None = field(default=None, repr=False)
    _cancelling: int = field(default=0, repr=False)

    def arm(self) -> None:
        """Let a failure cancel the current task (see the class docstring)."""
        self.task = self._armed = asyncio.current_task()
        self._cancelling = self.task.cancelling() if self.task is not None else 0

    def disarm(self) -> None:
        """No more aborts from now on (a later failure is not this attempt's)."""
        self.task = None

    def claim_abort(self) -> bool:
        """After a ``CancelledError``: whether it was this exchange's abort, and only that."""
        task, self._armed = self._armed, None
        self.task = None
        if not self.aborted or task is None:
            return False
        return task.uncancel() <= self._cancelling

    def _abort(self) -> None:
        task = self.task
        if task is not None and not self.aborted and not task.done():
            self.aborted = True
            task.cancel("hangguard: the MCP transport failed")

    def note_response(self, status: int, content_type: str) -> None:
        media = content_type.split(";", 1)[0].strip().lower()
        http_error = status >= 400 and media != "application/json"
        not_jsonrpc = status == 200 and media not in ("application/json", "text/event-stream", "")
        if http_error or not_jsonrpc:
            if self.status is None:
                self.status, self.content_type = status, media
            self._abort()

    def note_error(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._abort()


#: The exchange of the attempt whose message is being sent (read in the HTTP client).
current_exchange: ContextVar[Exchange | None] = ContextVar("hangguard_mcp_exchange", default=None)


class _ObservedClient(httpx2.AsyncClient):
    """An httpx2 client that reports each request's outcome to the current exchange."""

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        exchange = current_exchange.get()
        if request.method == "DELETE" or (request.method == "POST" and _is_notification(request)):
            # A notification or the session DELETE: see _SIDE_REQUEST_TIMEOUT.
            request.extensions["timeout"] = httpx2.Timeout(_SIDE_REQUEST_TIMEOUT).as_dict()
        if exchange is None:
            return await super().send(request, **kwargs)
        exchange.requests += 1
        try:
            response = await super().send(request, **kwargs)
        except Exception as exc:
            exchange.note_error(exc)
            raise
        exchange.note_response(response.status_code, response.headers.get("content-type", ""))
        return response


def _is_notification(request: httpx2.Request) -> bool:
    # A cheap look at the body the SDK serialised: JSON-RPC requests carry an "id".
    try:
        return b'"id"' not in request.content
    except httpx2.RequestNotRead:
        return False


def open_http_client(
    headers: Mapping[str, str] | None, connect_timeout: float, *, max_connections: int = 100
) -> httpx2.AsyncClient:
    """The HTTP client of one connection; read timeouts are left to hangguard's deadlines."""
    connect = None if math.isinf(connect_timeout) else connect_timeout
    return _ObservedClient(
        headers=dict(headers) if headers else None,
        timeout=httpx2.Timeout(None, connect=connect),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=20),
    )


def sse_client_factory(
    client: Callable[[], httpx2.AsyncClient],
) -> Callable[..., httpx2.AsyncClient]:
    """Adapt :func:`open_http_client` to ``sse_client``'s ``httpx_client_factory``."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return client()

    return factory


# --- SSE ---------------------------------------------------------------------------------


class _BufferedWriter:
    """The write end handed to the SDK session: while ``buffered()``, ``send`` never waits.

    The SDK's writers POST some messages one at a time and wait for the answer: every
    message over SSE, and notifications over streamable HTTP before the 2026-07-28
    protocol (among them the cancellation notice the SDK sends, shielded, for up to 5 s,
    when a caller's deadline fires). One POST a dead server never answers then blocks
    every later write, and the caller's deadline with it. Queueing here keeps the
    deadline; a forwarder hands the messages on in order, each in the context its sender
    had (which the SDK reads for request metadata and hangguard for the call's
    :class:`Exchange`). When ``buffered()`` is false, messages go straight through.
    """

    __slots__ = ("_buffered", "_queue", "_stream")

    def __init__(
        self,
        stream: Any,
        queue: MemoryObjectSendStream[tuple[contextvars.Context, SessionMessage]],
        buffered: Callable[[], bool],
    ) -> None:
        self._stream = stream
        self._queue = queue
        self._buffered = buffered

    async def send(self, item: SessionMessage, /) -> None:
        if self._buffered():
            self._queue.send_nowait((contextvars.copy_context(), item))
        else:
            await self._stream.send(item)

    async def aclose(self) -> None:
        await self._queue.aclose()

    async def __aenter__(self) -> _BufferedWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def buffered_writes(
    transport: contextlib.AbstractAsyncContextManager[tuple[Any, Any]],
    buffered: Callable[[], bool] = lambda: True,
) -> AsyncIterator[tuple[Any, _BufferedWriter]]:
    """Wrap an SDK transport so that writes to it do not block while ``buffered()``.

    See :class:`_BufferedWriter`.
    """
    async with transport as (read_stream, write_stream):
        queue_in, queue_out = anyio.create_memory_object_stream[
            tuple[contextvars.Context, SessionMessage]
        ](math.inf)

        async def forward() -> None:
            async with queue_out:
                try:
                    async for context, message in queue_out:
                        await asyncio.create_task(write_stream.send(message), context=context)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # The SDK's writer died (over SSE: at a failed POST), so nothing more
                    # reaches the server: end the read side too, and the session fails
                    # every waiting request at once instead of at each one's deadline.
                    await read_stream.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(forward)
            try:
                yield read_stream, _BufferedWriter(write_stream, queue_in, buffered)
            finally:
                tg.cancel_scope.cancel()
