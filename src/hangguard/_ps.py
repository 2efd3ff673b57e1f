"""The watcher thread: answers ``hangguard ps`` and sends the live snapshots.

Why a thread of the target and not a signal or ``sys.remote_exec``: a Python signal
handler, and the script ``sys.remote_exec`` (3.14) runs, both run in the *main* thread at
its next bytecode boundary, so neither can answer while the main thread (the event loop)
is blocked in ``time.sleep``, a socket read or a lock. A thread of the target can: those
calls release the GIL, and the thread reads every other thread's frames from the
interpreter's table (:func:`hangguard._inflight.thread_frames`). It is the same mechanism
on 3.11 to 3.14. (A C call that *holds* the GIL stops every thread; nothing in the process
can answer then, and ``ps`` says so after its timeout.)

The thread is started by :func:`hangguard.setup_tracing` (unless ``HANGGUARD_PS=0``), or
by the first guarded op when ``HANGGUARD_PS=1``; never at import. It listens on a
Unix-domain socket named by the PID in a per-user directory of mode 0700
(:func:`socket_dir`), and answers each connection with one JSON document (:func:`report`).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from . import _config, _inflight, _snapshots

__all__ = [
    "PS_VERSION",
    "PsError",
    "Watcher",
    "maybe_start",
    "query",
    "report",
    "socket_dir",
    "socket_path",
    "start",
    "stop",
    "watcher",
]

logger = logging.getLogger("hangguard")

#: The version of the ``ps`` JSON document (docs/debugging-hangs.md describes it).
PS_VERSION: Final = 1
#: How long the watcher waits for a client's request line.
_REQUEST_TIMEOUT: Final = 1.0


class PsError(Exception):
    """``hangguard ps`` cannot get an answer from that PID (the message says why)."""


def socket_dir() -> Path:
    """The per-user directory of the watchers' sockets, created with mode 0700.

    ``$XDG_RUNTIME_DIR/hangguard`` when that is set, else ``hangguard-<uid>`` in the
    temporary directory. A directory there that another user owns, or that others may
    write to, is refused: a socket in it could be anybody's.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "hangguard" if runtime else None
    if base is None or not base.parent.is_dir():
        base = Path(tempfile.gettempdir()) / f"hangguard-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise PsError(f"cannot create the socket directory {base}: {exc}") from exc
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PsError(f"{base} is not a directory of this user: refusing to use it")
    if info.st_mode & 0o077:
        raise PsError(f"{base} is open to other users (mode {info.st_mode & 0o777:o})")
    return base


def socket_path(pid: int) -> Path:
    """Where the watcher of process ``pid`` listens."""
    return socket_dir() / f"{pid}.sock"


def _leaf_stacks_only(records: list[_inflight.Record]) -> list[_inflight.Record]:
    # A parent's stack is its innermost child's: show it once, on the leaf.
    parents = {r.parent_id for r in records if r.parent_id is not None}
    out = []
    for r in records:
        if r.id in parents and r.stack:
            r = _inflight.Record(**{**_fields(r), "stack": ()})
        out.append(r)
    return out


def _fields(record: _inflight.Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _number(value: float) -> float | None:
    # JSON has no infinity: "no deadline" is null.
    return None if math.isinf(value) else round(value, 6)


def record_json(record: _inflight.Record) -> dict[str, Any]:
    """One entry of the ``ps`` document (the stable, documented shape)."""
    data = _fields(record)
    data["elapsed_s"] = round(record.elapsed_s, 6)
    data["budget_left_s"] = _number(record.budget_left_s)
    # Built by hand: dataclasses.asdict deep-copies every field, and was most of the
    # time of a ps answer with thousands of entries.
    data["stack"] = [
        {"function": f.function, "file": f.file, "line": f.line, "source": f.source}
        for f in record.stack
    ]
    node = record.node
    data["node"] = (
        None if node is None else {"node_id": node.node_id, "ip": node.ip, "pid": node.pid}
    )
    return data


def report() -> dict[str, Any]:
    """The document the watcher answers: this process and its in-flight entries."""
    records = _leaf_stacks_only(_inflight.snapshot(stacks=True))
    return {
        "version": PS_VERSION,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "argv": list(sys.argv),
        "time": time.time(),
        "snapshots": dict(_snapshots.totals),
        "entries": [record_json(r) for r in records],
    }


class Watcher:
    """The thread: a socket server plus an optional periodic job (the snapshots)."""

    def __init__(self, tick: Callable[[], float | None] | None = None) -> None:
        self.path = socket_path(os.getpid())
        self._tick = tick
        self._stop = threading.Event()
        with_stale_removed(self.path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._server.listen(8)
        self._thread = threading.Thread(target=self._run, name="hangguard-watcher", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def set_tick(self, tick: Callable[[], float | None] | None) -> None:
        """Replace the periodic job (it returns the seconds until it wants to run again)."""
        self._tick = tick

    def _run(self) -> None:
        wait: float | None = 0.0  # look once at the start, then as the job asks
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._server], [], [], wait)
            except (OSError, ValueError):  # closed under us
                return
            if ready:
                self._answer()
            tick = self._tick
            if tick is not None:
                try:
                    wait = tick()
                except Exception:
                    logger.warning("hangguard: a live snapshot failed", exc_info=True)
                    wait = 1.0
            else:
                wait = None

    def _answer(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(_REQUEST_TIMEOUT)
                conn.recv(64)  # the request line ("ps\n"); there is one request
                payload = json.dumps(report()).encode() + b"\n"
                conn.sendall(payload)
            except OSError:
                return  # the client left; nothing to report
            except Exception:
                logger.warning("hangguard: answering ps failed", exc_info=True)

    def close(self) -> None:
        """Stop listening and remove the socket (also at exit)."""
        self._stop.set()
        atexit.unregister(self.close)
        try:
            self._server.close()
        finally:
            with_stale_removed(self.path)


def with_stale_removed(path: Path) -> None:
    """Remove ``path`` if it is a socket left by a process that is gone (or by us)."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


_lock = threading.Lock()
_watcher: Watcher | None = None
_checked_env = False


def watcher() -> Watcher | None:
    """The running watcher of this process, if any."""
    return _watcher


def start(tick: Callable[[], float | None] | None = None) -> Watcher:
    """Start the watcher (idempotent; a later ``tick`` replaces the earlier)."""
    global _watcher
    with _lock:
        if _watcher is None or _watcher.path != socket_path(os.getpid()):
            _watcher = Watcher(tick)
        elif tick is not None:
            _watcher.set_tick(tick)
        return _watcher


def stop() -> None:
    """Stop the watcher, if running."""
    global _watcher
    with _lock:
        w, _watcher = _watcher, None
    if w is not None:
        w.close()


def maybe_start() -> None:
    """At the first guarded op: start the watcher when ``HANGGUARD_PS=1`` says so.

    A bad value raises :class:`ConfigError` at that op, every time until it is fixed.
    """
    global _checked_env
    if _checked_env:
        return
    wanted = _config.ps()
    _checked_env = True
    if wanted:
        try:
            start(_snapshots.ticker(_config.snapshot_after(), None))
        except (OSError, PsError) as exc:
            logger.warning("hangguard: HANGGUARD_PS=1 but the watcher cannot start: %s", exc)


def query(pid: int, timeout: float = 2.0) -> dict[str, Any]:
    """Ask process ``pid``'s watcher for its in-flight work; raises :class:`PsError`."""
    if pid <= 0:
        raise PsError(f"{pid} is not a process id")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise PsError(f"no process {pid}") from None
    except PermissionError:
        raise PsError(f"process {pid} belongs to another user: run ps as that user") from None
    path = socket_path(pid)
    if not path.exists():
        raise PsError(
            f"process {pid} runs no hangguard watcher (it starts with setup_tracing(), "
            "or HANGGUARD_PS=1 at the first guarded op)"
        )
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(b"ps\n")
            while True:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    except TimeoutError:
        raise PsError(
            f"process {pid} did not answer within {timeout:g}s: its interpreter is held "
            "(a C call that keeps the GIL, or it is stopped)"
        ) from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise PsError(
            f"process {pid} runs no hangguard watcher (a stale socket at {path})"
        ) from None
    except OSError as exc:
        raise PsError(f"cannot reach process {pid} at {path}: {exc}") from None
    try:
        doc: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError:
        raise PsError(f"process {pid} sent no valid answer at {path}") from None
    if doc.get("pid") != pid:
        raise PsError(f"the socket {path} is answered by process {doc.get('pid')}, not {pid}")
    return doc
