"""Where an MCP client connects and how: a URL, a command, server parameters, a config entry.

:func:`resolve_target` turns what the caller passed (``McpClient(where, ...)``, or the
``name=``/``config=`` lookup of flowllm-style MCP configs) into one :class:`Target`, and
names the parameter or config key at fault when it cannot.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigError

__all__ = ["TRANSPORTS", "Target", "TransportName", "TransportSpec", "resolve_target"]

TransportName = Literal["streamable-http", "sse", "stdio", "in-process"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportSpec:
    """What the client needs to know of one MCP transport, in one place.

    ``network`` is the span's ``network.transport`` (``None``: no wire at all).
    ``http``: each request is an HTTP request the client observes (its status, its
    transport error). ``loses_failures``: the SDK's writer dies at a failed request and
    the caller would wait for an answer that cannot come, so the attempt is aborted at the
    first failure. ``acks_before_running``: the server answers each request's POST before
    it hands the message on (the SDK's SSE server sends its 202 first), so a POST that got
    no status at all provably never ran.
    """

    name: TransportName
    aliases: tuple[str, ...] = ()
    network: str | None = None
    http: bool = False
    loses_failures: bool = False
    acks_before_running: bool = False


#: One entry per transport; the opener of each lives in ``_session``.
TRANSPORTS: Mapping[TransportName, TransportSpec] = {
    spec.name: spec
    for spec in (
        TransportSpec(
            name="streamable-http",
            aliases=("streamable_http", "streamablehttp", "http"),
            network="tcp",
            http=True,
        ),
        TransportSpec(
            name="sse", network="tcp", http=True, loses_failures=True, acks_before_running=True
        ),
        TransportSpec(name="stdio", network="pipe"),
        TransportSpec(name="in-process"),
    )
}
_TRANSPORT_ALIASES: Mapping[str, TransportName] = {
    alias: spec.name for spec in TRANSPORTS.values() for alias in (spec.name, *spec.aliases)
}


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

    @property
    def spec(self) -> TransportSpec:
        """The transport's entry in :data:`TRANSPORTS`."""
        return TRANSPORTS[self.transport]


def _normalise_transport(value: object, param: str) -> TransportName | Literal["auto"]:
    if not isinstance(value, str):
        raise TypeError(f"{param} must be a string, got {value!r}")
    key = value.strip().lower()
    if key == "auto":
        return "auto"
    if key not in _TRANSPORT_ALIASES:
        names = ", ".join(repr(name) for name in TRANSPORTS)
        raise ValueError(f"{param} must be 'auto' or one of {names}, got {value!r}")
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
    ``config["mcpServers"][name]``) is used, as in flowllm's ``McpClient(name=, config=)``.
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
