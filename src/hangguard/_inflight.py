"""The in-flight registry: what is running in this process right now, and where it is stuck.

It is the one source for ``hangguard ps``, the live snapshots sent to the collector and the
records written when the process is terminated. Each open guarded op, group, thread call,
Ray task, MCP call and HTTP request is an :class:`Entry` from the moment it starts until it
ends (or, for work that ignored its cancellation, until it really ends).

It costs nothing per task when nobody reads it: a scope adds its entry when it starts and
removes it when it ends (one dict insert and one pop). A group's tasks are not entries of
their own: the group lists them through ``children`` only when a reader asks, so fan-out
pays nothing per task. Entries are removed explicitly, and an entry refers to its work only
through callables the owner gives (``where`` and ``children``, the latter held weakly
when it is the owner's method), so a finished task or thread is never kept alive by the
registry, and a group dropped without a join loses its entry when it is collected.

Readers run on another thread (the ``ps`` watcher, the snapshot timer, a signal handler):
:func:`snapshot` copies the table, never mutates an entry, and turns each into a frozen
:class:`Record`.

Example (what a reader sees)::

    for record in hangguard._inflight.snapshot():
        print(record.kind, record.name, record.state, record.budget_left_s)
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import linecache
import math
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Container, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, TypeVar

from opentelemetry import trace

from . import _deadline

__all__ = [
    "ABANDONED",
    "CANCELLING",
    "GROUP",
    "HTTP",
    "IGNORING_CANCEL",
    "KINDS",
    "MCP",
    "OP",
    "RAY",
    "RUNNING",
    "STATES",
    "TASK",
    "THREAD",
    "Entry",
    "Frame",
    "Node",
    "Record",
    "add",
    "adopt_span",
    "awaited",
    "called",
    "current",
    "discard",
    "entered",
    "entries",
    "find",
    "open_entry",
    "registered",
    "snapshot",
    "task_frames",
    "thread_frames",
    "tracking",
]

# Kinds of work.
OP: Final = "op"
GROUP: Final = "group"
TASK: Final = "task"
THREAD: Final = "thread"
RAY: Final = "ray"
MCP: Final = "mcp"
HTTP: Final = "http"
KINDS: Final = (OP, GROUP, TASK, THREAD, RAY, MCP, HTTP)

# States, in the order a piece of work may move through them.
RUNNING: Final = "running"
CANCELLING: Final = "cancelling"  # cancelled, within its grace
IGNORING_CANCEL: Final = "ignoring_cancel"  # its grace is over and it still runs
ABANDONED: Final = "abandoned"  # its joiner has left; it runs on, detached
STATES: Final = (RUNNING, CANCELLING, IGNORING_CANCEL, ABANDONED)

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a stuck stack: innermost first in :attr:`Record.stack`."""

    function: str
    file: str
    line: int
    source: str  # the source line, stripped ("" when the file cannot be read)


class Entry:
    """One piece of work while it runs; mutated only by its owner.

    ``span`` is the work's open span, if traced (a termination record ends it).
    ``where`` returns the frames where the work is now (innermost first) and ``children``
    the entries below it that are not registered themselves (a group's tasks); both are
    called by readers, on another thread, and must not raise for work that has finished.
    ``node`` says where work running elsewhere runs (a Ray task: its node and worker).
    """

    __slots__ = (
        "children",
        "deadline",
        "id",
        "kind",
        "name",
        "node",
        "parent",
        "span",
        "span_id",
        "start",
        "started_at",
        "state",
        "thread_id",
        "trace_id",
        "where",
    )

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        deadline: float = math.inf,
        parent: Entry | None = None,
        trace_id: int = 0,
        span_id: int = 0,
        span: Any = None,
        where: Callable[[], tuple[Frame, ...]] | None = None,
        children: Callable[[], Iterable[Entry]] | None = None,
        start: float | None = None,
    ) -> None:
        self.id = next(_ids)
        self.kind = kind
        self.name = name
        self.deadline = deadline  # absolute, on hangguard's clock; math.inf: none
        self.parent = parent
        self.trace_id = trace_id
        self.span_id = span_id
        # The open span (an OpenTelemetry Span) while the entry is registered, so that a
        # termination can end it; dropped with the entry.
        self.span = span
        self.where = where
        self.children = _held_weakly(self.id, children) if children is not None else None
        self.start = _deadline.now() if start is None else start
        self.started_at = time.time()  # wall clock, for display only
        self.state = RUNNING
        self.thread_id = threading.get_ident()
        self.node: Node | None = None

    @classmethod
    def child(
        cls,
        parent: Entry,
        name: str,
        where: Callable[[], tuple[Frame, ...]],
        state: str,
        *,
        start: float,
        started_at: float,
    ) -> Entry:
        """A task listed by its group's ``children`` for one read, built without ``__init__``.

        A reader lists thousands of them per read: the clocks are read once per read by the
        caller (``start``, ``started_at``), and the task runs on its group's thread, so the
        ids, deadline and thread come from ``parent``. Example::

            Entry.child(group_entry, "fetch[3]", where, RUNNING, start=now(), started_at=t)
        """
        kid = cls.__new__(cls)
        kid.id = next(_ids)
        kid.kind = TASK
        kid.name = name
        kid.deadline = parent.deadline
        kid.parent = parent
        kid.trace_id = 0
        kid.span_id = 0
        kid.span = None
        kid.where = where
        kid.children = None
        kid.start = start
        kid.started_at = started_at
        kid.state = state
        kid.thread_id = parent.thread_id
        kid.node = None
        return kid


def _held_weakly(
    entry_id: int, children: Callable[[], Iterable[Entry]]
) -> Callable[[], Iterable[Entry]]:
    """``children`` without keeping its owner alive, when it is an owner's bound method.

    A group lists its tasks through a method of its own (``group._children``): held
    strongly, the registry would keep a group that is dropped without a join alive, and
    its entry listed, forever. Held through a weak method instead, with a finalizer on
    the group that drops the entry when the group is collected.
    """
    owner = getattr(children, "__self__", None)
    if owner is None or not inspect.ismethod(children):
        return children
    try:
        method = weakref.WeakMethod(children)
        finalizer = weakref.finalize(owner, _entries.pop, entry_id, None)
    except TypeError:  # an owner without weak references: held as given
        return children
    finalizer.atexit = False  # at exit the table goes with the process

    def listed() -> Iterable[Entry]:
        bound = method()
        return () if bound is None else bound()

    return listed


@dataclass(frozen=True, slots=True)
class Node:
    """Where work that runs in another process runs (a Ray task: as its worker reported)."""

    node_id: str  # the Ray node id (hex)
    ip: str
    pid: int  # the worker process (``hangguard ps`` it on that node)


@dataclass(frozen=True, slots=True)
class Record:
    """What a reader sees of one entry at one moment (a value; safe to keep and send)."""

    id: int
    parent_id: int | None
    kind: str
    name: str
    state: str
    trace_id: str  # 32 hex digits, or "" when untraced
    span_id: str  # 16 hex digits, or ""
    started_at: float  # wall-clock seconds since the epoch
    elapsed_s: float
    budget_left_s: float  # math.inf: no deadline; negative: overdue
    thread_id: int
    stack: tuple[Frame, ...]
    node: Node | None = None  # runs in another process, there (``None``: here)


#: Frames kept of a stuck stack, innermost first.
STACK_DEPTH: Final = 8


def _frame(frame: FrameType) -> Frame:
    code = frame.f_code
    line = frame.f_lineno or 0
    return Frame(
        function=code.co_name,
        file=code.co_filename,
        line=line,
        source=linecache.getline(code.co_filename, line).strip(),
    )


def thread_frames(thread_id: int, depth: int = STACK_DEPTH) -> tuple[Frame, ...]:
    """Where thread ``thread_id`` is now, innermost first (``()`` if it has ended).

    Read from the interpreter's table of current frames (``sys._current_frames``, the
    documented way), so it works while that thread is stuck in a C call.
    """
    frame = sys._current_frames().get(thread_id)
    frames: list[Frame] = []
    while frame is not None and len(frames) < depth:
        frames.append(_frame(frame))
        frame = frame.f_back
    return tuple(frames)


def task_frames(task: asyncio.Task[Any], depth: int = STACK_DEPTH) -> tuple[Frame, ...]:
    """Where a suspended task waits: the innermost frames of its await chain.

    A task that is running right now (its loop is blocked inside it) has no suspended
    frames to show; the caller shows its loop thread's stack instead.
    """
    chain: list[FrameType] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return tuple(_frame(f) for f in reversed(chain[-depth:]))


_entries: dict[int, Entry] = {}
_current: contextvars.ContextVar[Entry | None] = contextvars.ContextVar(
    "hangguard_inflight", default=None
)


def add(entry: Entry) -> Entry:
    """Register ``entry`` as running; returns it."""
    _entries[entry.id] = entry
    return entry


def discard(entry: Entry) -> None:
    """Forget ``entry`` (its work has ended); idempotent."""
    _entries.pop(entry.id, None)


def current() -> Entry | None:
    """The innermost registered entry of this context (the parent of new work)."""
    return _current.get()


class entered:  # lower case: it reads as the function it replaced, ``with entered(e):``
    """Register ``entry`` and make it the parent of work started inside the block.

    A class, not a generator context manager: every guarded HTTP and MCP call enters one,
    and this costs a third of what ``@contextmanager`` does. Example::

        with entered(open_entry(HTTP, "GET http://127.0.0.1:8000")):
            ...
    """

    __slots__ = ("entry", "token")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def __enter__(self) -> Entry:
        entry = self.entry
        _entries[entry.id] = entry
        self.token = _current.set(entry)
        return entry

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self.token)
        _entries.pop(self.entry.id, None)


def entries() -> list[Entry]:
    """The registered entries now (a copy; safe from any thread)."""
    while True:
        try:
            return list(_entries.values())
        except RuntimeError:  # changed size while copied on another thread: copy again
            continue


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x") if value else ""


def _record(entry: Entry, parent_id: int | None, now: float, stacks: bool) -> Record:
    stack: tuple[Frame, ...] = ()
    if stacks and entry.where is not None:
        try:
            stack = entry.where()
        except Exception:  # the work ended while it was read: no stack, not an error
            stack = ()
    return Record(
        id=entry.id,
        parent_id=parent_id,
        kind=entry.kind,
        name=entry.name,
        state=entry.state,
        trace_id=_hex(entry.trace_id, 32),
        span_id=_hex(entry.span_id, 16),
        started_at=entry.started_at,
        elapsed_s=max(0.0, now - entry.start),
        budget_left_s=entry.deadline - now,
        thread_id=entry.thread_id,
        stack=stack,
        node=entry.node,
    )


def snapshot(*, stacks: bool = True, stacks_for: Container[int] | None = None) -> list[Record]:
    """Every in-flight entry and the children its owners list, parents before children.

    ``stacks=False`` skips the frames (the cheap listing a rate-limited reader takes first);
    ``stacks_for`` reads them only for the entries of those ids (the ones that qualified).
    """
    now = _deadline.now()
    out: list[Record] = []

    def want(entry: Entry) -> bool:
        return stacks and (stacks_for is None or entry.id in stacks_for)

    for entry in entries():
        parent = entry.parent
        parent_id = parent.id if parent is not None and parent.id in _entries else None
        out.append(_record(entry, parent_id, now, want(entry)))
        if entry.children is not None:
            try:
                kids = list(entry.children())
            except Exception:  # the owner ended while it was read
                kids = []
            out.extend(_record(kid, entry.id, now, want(kid)) for kid in kids)
    return out


def find(entry_id: int) -> Entry | None:
    """The registered entry of that id (not a group's listed child), if still running."""
    return _entries.get(entry_id)


T = TypeVar("T")


def _where_here() -> Callable[[], tuple[Frame, ...]]:
    """Where the work started here is, read later from another thread.

    In a task: its suspended await chain, or, while it is the one running (its loop is
    blocked inside it), the loop thread's stack. Outside a task: this thread's stack. The
    task is held weakly: a finished task is never kept alive by its entry.
    """
    thread_id = threading.get_ident()
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None:
        return lambda: thread_frames(thread_id)
    ref = weakref.ref(task)

    def where() -> tuple[Frame, ...]:
        t = ref()
        if t is None or t.done():
            return ()
        if getattr(t.get_coro(), "cr_running", False):
            return thread_frames(thread_id)
        return task_frames(t)

    return where


def open_entry(
    kind: str,
    name: str,
    *,
    span: Any = None,
    deadline: float | None = None,
    children: Callable[[], Iterable[Entry]] | None = None,
) -> Entry:
    """An entry for work starting here (not registered yet: see :func:`tracking`).

    Its parent is the current entry; its trace and span ids are ``span``'s, else the
    current span's; its deadline is ``deadline`` (absolute, hangguard's clock), else the
    deadline in force here. Work that lists ``children`` (a group) is no leaf: its own
    frames are not kept.
    """
    if deadline is None:
        d = _deadline.current_deadline()
        deadline = math.inf if d is None else d.expires_at
    context = (span if span is not None else trace.get_current_span()).get_span_context()
    return Entry(
        kind,
        name,
        deadline=deadline,
        parent=_current.get(),
        trace_id=context.trace_id,
        span_id=context.span_id,
        span=span if span is not None and span.is_recording() else None,
        where=_where_here() if children is None else None,
        children=children,
    )


@contextmanager
def tracking(kind: str, name: str, *, span: Any = None) -> Iterator[Entry]:
    """Register the work of the block as ``kind``/``name`` while it runs (see open_entry)."""
    with entered(open_entry(kind, name, span=span)) as entry:
        yield entry


async def awaited(kind: str, name: str, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` registered as ``kind``/``name`` (one line at a call site)."""
    with entered(open_entry(kind, name)):
        return await awaitable


def registered(
    kind: str, name: str, fn: Callable[[], Awaitable[T]]
) -> Callable[[], Coroutine[Any, Any, T]]:
    """``fn`` whose every run is registered as ``kind``/``name`` (see :func:`awaited`)."""

    async def run() -> T:
        with entered(open_entry(kind, name)):
            return await fn()

    return run


def called(kind: str, name: str, fn: Callable[..., T], /, *args: Any) -> T:
    """Call ``fn(*args)`` registered as ``kind``/``name`` (the sync twin of awaited)."""
    with entered(open_entry(kind, name)):
        return fn(*args)


def adopt_span(span: Any) -> None:
    """Make ``span`` the current entry's own (the call opened its span after registering)."""
    entry = _current.get()
    if entry is not None:
        context = span.get_span_context()
        entry.trace_id, entry.span_id = context.trace_id, context.span_id
        entry.span = span if span.is_recording() else None
