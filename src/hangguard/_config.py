"""Configuration from the environment, read when first needed and never at import.

Every variable hangguard reads is named here as a constant. Each getter parses its one
variable on use (memoised on the raw string), so a bad value fails the call that needs
it, with a :class:`ConfigError` naming the variable and the value, and never breaks
``import hangguard`` or an unrelated feature. An explicit argument always beats the env.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from ._exceptions import ConfigError

_log = logging.getLogger("hangguard")

__all__ = [
    "TABLE",
    "BudgetEntryProblem",
    "EnvVar",
    "ENV_BUDGETS",
    "ENV_CANCEL_EVENTS",
    "ENV_CANCEL_GRACE",
    "ENV_DEFAULT_BUDGET",
    "ENV_JAEGER_UI",
    "ENV_JOIN_TIMEOUT",
    "ENV_LOOP_BLOCK_THRESHOLD",
    "ENV_MCP_BREAKER",
    "ENV_MCP_CONNECT_TIMEOUT",
    "ENV_MCP_TIMEOUT",
    "ENV_PS",
    "ENV_RECORD_ON_SIGTERM",
    "ENV_RETRY_ATTEMPTS",
    "ENV_SERIAL",
    "ENV_SNAPSHOT_AFTER",
    "ENV_TRACE_FILE",
    "ENV_VARS",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "Config",
    "DEFAULT_CANCEL_EVENTS",
    "DEFAULT_CANCEL_GRACE",
    "DEFAULT_OP_BUDGET",
    "DEFAULT_MCP_BREAKER",
    "budgets",
    "cancel_events",
    "cancel_grace",
    "default_budget",
    "join_timeout",
    "load_config",
    "loop_block_threshold",
    "mcp_breaker",
    "mcp_connect_timeout",
    "mcp_timeout",
    "known_op_names",
    "note_op_name",
    "op_budget",
    "unmatched_budgets",
    "warn_unmatched_budgets",
    "parse_duration",
    "ps",
    "record_on_sigterm",
    "retry_attempts",
    "serial",
    "snapshot_after",
]

ENV_DEFAULT_BUDGET = "HANGGUARD_DEFAULT_BUDGET"
ENV_BUDGETS = "HANGGUARD_BUDGETS"
ENV_JOIN_TIMEOUT = "HANGGUARD_JOIN_TIMEOUT"
ENV_MCP_TIMEOUT = "HANGGUARD_MCP_TIMEOUT"
ENV_MCP_CONNECT_TIMEOUT = "HANGGUARD_MCP_CONNECT_TIMEOUT"
ENV_MCP_BREAKER = "HANGGUARD_MCP_BREAKER"
ENV_RETRY_ATTEMPTS = "HANGGUARD_RETRY_ATTEMPTS"
ENV_CANCEL_GRACE = "HANGGUARD_CANCEL_GRACE"
ENV_CANCEL_EVENTS = "HANGGUARD_CANCEL_EVENTS"
ENV_SERIAL = "HANGGUARD_SERIAL"
#: Turns the blocked-event-loop watchdog on, with this threshold.
ENV_LOOP_BLOCK_THRESHOLD = "HANGGUARD_LOOP_BLOCK_THRESHOLD"
#: With no OTLP endpoint, :func:`hangguard.setup_tracing` also appends spans to this file.
ENV_TRACE_FILE = "HANGGUARD_TRACE_FILE"
#: Base URL of the Jaeger UI that ``hangguard demo`` links its trace to.
ENV_JAEGER_UI = "HANGGUARD_JAEGER_UI"
#: The ``hangguard ps`` watcher thread: 1 starts it at the first guarded op, 0 keeps
#: :func:`hangguard.setup_tracing` from starting it.
ENV_PS = "HANGGUARD_PS"
#: Work still open after this long is exported as a live snapshot (``none``: never).
ENV_SNAPSHOT_AFTER = "HANGGUARD_SNAPSHOT_AFTER"
#: 0: :func:`hangguard.setup_tracing` installs no SIGTERM handler recording the hang.
ENV_RECORD_ON_SIGTERM = "HANGGUARD_RECORD_ON_SIGTERM"

# The standard OpenTelemetry variables hangguard reads itself (the SDK has constants for
# them, but the SDK is an optional extra).
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
OTEL_EXPORTER_OTLP_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_EXPORTER_OTLP_TRACES_TIMEOUT = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
OTEL_EXPORTER_OTLP_METRICS_TIMEOUT = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_TRACES_HEADERS = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
OTEL_EXPORTER_OTLP_METRICS_HEADERS = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
OTEL_EXPORTER_OTLP_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
OTEL_EXPORTER_OTLP_TRACES_COMPRESSION = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
OTEL_EXPORTER_OTLP_METRICS_COMPRESSION = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"
OTEL_BSP_MAX_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
OTEL_BSP_SCHEDULE_DELAY = "OTEL_BSP_SCHEDULE_DELAY"
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"

# The default as written in the docs, and the meaning, of each variable (see TABLE).
_DOCS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        ENV_DEFAULT_BUDGET: ("300", "deadline of every guarded op without one ('none': no limit)"),
        ENV_BUDGETS: ("none", "per-op budgets, e.g. CompanySegmentFactorOp=120,SearchOp=30s"),
        ENV_JOIN_TIMEOUT: ("none", "join timeout when the call gives none"),
        ENV_MCP_TIMEOUT: ("30", "timeout of one MCP call"),
        ENV_MCP_CONNECT_TIMEOUT: ("10", "timeout of connecting to an MCP server (handshake too)"),
        ENV_MCP_BREAKER: (
            "off",
            "circuit breaker per MCP server: off, on (5 failures, 30s), or failures=N,cooldown=D",
        ),
        ENV_RETRY_ATTEMPTS: ("3", "default number of attempts of hangguard.retry"),
        ENV_CANCEL_GRACE: ("1", "how long join waits for cancelled tasks to finish"),
        ENV_CANCEL_EVENTS: (
            "16",
            "cancelled tasks per group that get a hangguard.cancelled event (0: none)",
        ),
        ENV_SERIAL: ("0", "1: run submitted tasks one at a time, in submit order (debug mode)"),
        ENV_LOOP_BLOCK_THRESHOLD: (
            "off",
            "watch event loops; report a loop that runs no callback for longer than this",
        ),
        ENV_PS: (
            "auto",
            "the hangguard ps watcher: 1 on (at the first op), 0 off; unset: on with "
            "setup_tracing()",
        ),
        ENV_SNAPSHOT_AFTER: (
            "10",
            "export a live snapshot of work still open after this long ('none': never)",
        ),
        ENV_RECORD_ON_SIGTERM: (
            "1",
            "setup_tracing() ends open spans as 'terminated' on SIGTERM, then chains (0: off)",
        ),
    }
)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_NONE_WORDS = frozenset({"", "none", "off", "inf", "infinite"})


def parse_duration(
    text: str, *, name: str, allow_none: bool = True, allow_zero: bool = False
) -> float:
    """Parse ``2.5``, ``500ms``, ``30s``, ``2m`` or ``1h`` into seconds.

    The one parser of durations, for the env and the command line's flags alike, so both
    accept and refuse the same values in the same words. ``none``/``off``/``inf`` (and
    empty) mean no limit (``math.inf``) where allowed. Zero is refused unless
    ``allow_zero``: a budget or timeout of zero cancels everything at once. Raises
    :class:`ConfigError` naming ``name`` (the variable or flag) and the value.
    """
    if allow_none and text.strip().lower() in _NONE_WORDS:
        return math.inf
    m = _DURATION.match(text)
    if m is None:
        raise ConfigError(
            f"{name}={text!r} is not a duration: use seconds (2.5) or a unit (500ms, 30s, 2m, 1h)"
            + (", or 'none'" if allow_none else ""),
            name=name,
            value=text,
        )
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if math.isinf(seconds) or math.isnan(seconds):
        raise ConfigError(f"{name}={text!r} is not a finite duration", name=name, value=text)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        hint = " ('none' for no limit)" if allow_none else ""
        raise ConfigError(f"{name}={text!r} must be {bound}{hint}", name=name, value=text)
    return seconds


def _parse_budgets(text: str) -> Mapping[str, float]:
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        op, sep, value = item.partition("=")
        op = op.strip()
        if not sep or not op:
            raise ConfigError(
                f"{ENV_BUDGETS}={text!r}: entry {item!r} is not NAME=DURATION "
                "(e.g. CompanySegmentFactorOp=120,SearchOp=30s)",
                name=ENV_BUDGETS,
                value=text,
            )
        if op in out:
            raise ConfigError(
                f"{ENV_BUDGETS}={text!r}: op {op!r} is given twice", name=ENV_BUDGETS, value=text
            )
        try:
            out[op] = parse_duration(value, name=f"{ENV_BUDGETS}[{op}]")
        except ConfigError as exc:
            raise ConfigError(
                f"{ENV_BUDGETS}={text!r}: {exc}", name=ENV_BUDGETS, value=text
            ) from None
    return MappingProxyType(out)


def _parse_attempts(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{ENV_RETRY_ATTEMPTS}={text!r} must be a whole number >= 1",
            name=ENV_RETRY_ATTEMPTS,
            value=text,
        )
    return value


def _parse_count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{ENV_CANCEL_EVENTS}={text!r} must be a whole number >= 0",
            name=ENV_CANCEL_EVENTS,
            value=text,
        )
    return value


def _parse_bool(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"{name}={text!r} must be 1 or 0 (or true/false, yes/no, on/off)",
            name=name,
            value=text,
        )

    return parse


T = TypeVar("T")
_memo: dict[tuple[str, str], object] = {}


def _read(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(name)
    if raw is None:
        return default
    key = (name, raw)
    try:
        return _memo[key]  # type: ignore[return-value]
    except KeyError:
        value = parse(raw)
        if len(_memo) > 256:  # env values change rarely; keep the memo small anyway
            _memo.clear()
        _memo[key] = value
        return value


def _duration(
    name: str, *, allow_none: bool = True, allow_zero: bool = False
) -> Callable[[str], float]:
    return lambda text: parse_duration(
        text, name=name, allow_none=allow_none, allow_zero=allow_zero
    )


#: The budget of a guarded op or ``traced`` call that has none of its own, when
#: ``HANGGUARD_DEFAULT_BUDGET`` is unset: finite, so that every join ends even when no one
#: set a bound (docs/env.md says why five minutes).
DEFAULT_OP_BUDGET = 300.0
DEFAULT_MCP_TIMEOUT = 30.0
DEFAULT_MCP_CONNECT_TIMEOUT = 10.0
DEFAULT_RETRY_ATTEMPTS = 3


def default_budget() -> float:
    """``HANGGUARD_DEFAULT_BUDGET`` in seconds (300 when unset; ``none``: ``math.inf``)."""
    return _read(ENV_DEFAULT_BUDGET, DEFAULT_OP_BUDGET, _duration(ENV_DEFAULT_BUDGET))


_NO_BUDGETS: Mapping[str, float] = MappingProxyType({})


def budgets() -> Mapping[str, float]:
    """``HANGGUARD_BUDGETS`` as a read-only mapping of op name to seconds."""
    return _read(ENV_BUDGETS, _NO_BUDGETS, _parse_budgets)


def op_budget(op_name: str) -> float:
    """The env budget of an op: its ``HANGGUARD_BUDGETS`` entry, else the default budget."""
    budgets_ = budgets()
    if budgets_ and os.environ.get(ENV_BUDGETS) not in _budgets_checked:
        warn_unmatched_budgets(op_name)
    if op_name in budgets_:
        return budgets_[op_name]
    return default_budget()


# -- HANGGUARD_BUDGETS entries that match no op --------------------------------------------
#
# A misspelled op name in HANGGUARD_BUDGETS parses fine and is then never looked up: the op
# runs on the default budget and nothing says so. The decorators note each op's name (and
# each op class, whose undecorated subclasses run under their own names); the first op run
# under a given HANGGUARD_BUDGETS compares the entries with those names and logs, once, each
# entry that names none of them, with the close matches, and each empty entry (no limit).

_op_names: set[str] = set()
_op_classes: weakref.WeakSet[type] = weakref.WeakSet()
_budgets_checked: set[str | None] = set()


def note_op_name(name: str, cls: type | None = None) -> None:
    """Record that an op (or ``traced`` function) named ``name`` exists in this process."""
    _op_names.add(name)
    if cls is not None:
        _op_classes.add(cls)


def known_op_names() -> frozenset[str]:
    """Every op name noted so far, with the names of the op classes' subclasses."""
    names = set(_op_names)
    todo = list(_op_classes)
    seen: set[type] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class BudgetEntryProblem:
    """One ``HANGGUARD_BUDGETS`` entry worth a word: it names no op, or it is empty."""

    op: str
    #: ``"unmatched"`` (names no op) or ``"empty"`` (``Op=``: no limit).
    kind: str
    message: str


def unmatched_budgets(known: Collection[str] | None = None) -> list[BudgetEntryProblem]:
    """The ``HANGGUARD_BUDGETS`` entries that name no op in ``known`` (default: the ops
    decorated so far), with the close matches, and the empty ones (``Op=``: no limit).

    ``[]`` when the variable is unset; raises :class:`ConfigError` when it does not parse::

        for problem in unmatched_budgets({"CompanySegmentFactorOp"}):
            print(problem.message)
    """
    entries = budgets()
    names = known_op_names() if known is None else frozenset(known)
    raw = os.environ.get(ENV_BUDGETS, "")
    empty = {
        op.strip()
        for op, _, value in (item.partition("=") for item in raw.split(","))
        if op.strip() and not value.strip()
    }
    out = []
    for op in entries:
        if op not in names:
            close = difflib.get_close_matches(op, sorted(names), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "no op has a close name"
            out.append(
                BudgetEntryProblem(
                    op,
                    "unmatched",
                    f"{ENV_BUDGETS} entry {op!r} names no op decorated in this process "
                    f"({hint}); the entry is not used, so that op would run on the "
                    f"default budget ({ENV_DEFAULT_BUDGET})",
                )
            )
        if op in empty:
            out.append(
                BudgetEntryProblem(
                    op,
                    "empty",
                    f"{ENV_BUDGETS} entry '{op}=' is empty, which means no limit for {op} "
                    f"(write '{op}=none' to say so, or give a duration)",
                )
            )
    return out


def warn_unmatched_budgets(running: str) -> None:
    """Log each problem of :func:`unmatched_budgets` once per ``HANGGUARD_BUDGETS`` value."""
    raw = os.environ.get(ENV_BUDGETS)
    if raw in _budgets_checked:
        return
    _budgets_checked.add(raw)
    names = known_op_names() | {running}
    for problem in unmatched_budgets(names):
        _log.warning("%s", problem.message)


def join_timeout() -> float:
    """``HANGGUARD_JOIN_TIMEOUT`` in seconds (``math.inf`` when unset)."""
    return _read(ENV_JOIN_TIMEOUT, math.inf, _duration(ENV_JOIN_TIMEOUT))


def mcp_timeout() -> float:
    """``HANGGUARD_MCP_TIMEOUT`` in seconds (30 when unset)."""
    return _read(ENV_MCP_TIMEOUT, DEFAULT_MCP_TIMEOUT, _duration(ENV_MCP_TIMEOUT))


def mcp_connect_timeout() -> float:
    """``HANGGUARD_MCP_CONNECT_TIMEOUT`` in seconds (10 when unset)."""
    return _read(
        ENV_MCP_CONNECT_TIMEOUT, DEFAULT_MCP_CONNECT_TIMEOUT, _duration(ENV_MCP_CONNECT_TIMEOUT)
    )


#: ``HANGGUARD_MCP_BREAKER=on``: open after 5 consecutive transient failures, for 30 s.
DEFAULT_MCP_BREAKER = (5, 30.0)


def _parse_breaker(text: str) -> tuple[int, float] | None:
    word = text.strip().lower()
    if word in ("", "0", "off", "false", "no", "none"):
        return None
    if word in ("1", "on", "true", "yes"):
        return DEFAULT_MCP_BREAKER
    failures, cooldown = DEFAULT_MCP_BREAKER
    for raw in word.split(","):
        key, sep, value = (part.strip() for part in raw.partition("="))
        if key == "failures" and sep and value.isdigit() and int(value) >= 1:
            failures = int(value)
        elif key == "cooldown" and sep:
            cooldown = parse_duration(value, name=f"{ENV_MCP_BREAKER}[cooldown]", allow_none=False)
        else:
            raise ConfigError(
                f"{ENV_MCP_BREAKER}={text!r}: use off, on, or failures=N,cooldown=DURATION "
                "(e.g. failures=5,cooldown=30s); the entry at fault is "
                f"{raw.strip()!r}",
                name=ENV_MCP_BREAKER,
                value=text,
            )
    return failures, cooldown


def mcp_breaker() -> tuple[int, float] | None:
    """``HANGGUARD_MCP_BREAKER``: (failures, cooldown seconds), or ``None`` when off."""
    return _read(ENV_MCP_BREAKER, None, _parse_breaker)


def retry_attempts() -> int:
    """``HANGGUARD_RETRY_ATTEMPTS`` (3 when unset)."""
    return _read(ENV_RETRY_ATTEMPTS, DEFAULT_RETRY_ATTEMPTS, _parse_attempts)


#: The grace a join gives cancelled tasks when ``HANGGUARD_CANCEL_GRACE`` is unset.
DEFAULT_CANCEL_GRACE = 1.0


def cancel_grace() -> float:
    """``HANGGUARD_CANCEL_GRACE`` in seconds (1 when unset)."""
    return _read(
        ENV_CANCEL_GRACE,
        DEFAULT_CANCEL_GRACE,
        _duration(ENV_CANCEL_GRACE, allow_none=False, allow_zero=True),
    )


#: How many cancelled tasks of one group get a ``hangguard.cancelled`` event when
#: ``HANGGUARD_CANCEL_EVENTS`` is unset; every cancelled task's span carries the reason
#: and cause as attributes anyway, so a large group stays cheap to cancel.
DEFAULT_CANCEL_EVENTS = 16


def cancel_events() -> int:
    """``HANGGUARD_CANCEL_EVENTS``: cancelled tasks per group recorded with an event (16)."""
    return _read(ENV_CANCEL_EVENTS, DEFAULT_CANCEL_EVENTS, _parse_count)


def serial() -> bool:
    """``HANGGUARD_SERIAL``: whether submitted tasks run one at a time (debug mode)."""
    return _read(ENV_SERIAL, False, _parse_bool(ENV_SERIAL))


def _parse_threshold(text: str) -> float | None:
    seconds = parse_duration(text, name=ENV_LOOP_BLOCK_THRESHOLD)
    if math.isinf(seconds):
        return None
    if seconds <= 0:
        raise ConfigError(
            f"{ENV_LOOP_BLOCK_THRESHOLD}={text!r} must be a duration > 0, or 'off'",
            name=ENV_LOOP_BLOCK_THRESHOLD,
            value=text,
        )
    return seconds


def loop_block_threshold() -> float | None:
    """``HANGGUARD_LOOP_BLOCK_THRESHOLD`` in seconds; ``None`` (unset or off): no watchdog."""
    return _read(ENV_LOOP_BLOCK_THRESHOLD, None, _parse_threshold)


def _parse_ps(text: str) -> bool | None:
    if text.strip().lower() in ("", "auto"):
        return None
    return _parse_bool(ENV_PS)(text)


def ps() -> bool | None:
    """``HANGGUARD_PS``: ``True`` (on), ``False`` (off), ``None`` (unset: on with setup_tracing)."""
    return _read(ENV_PS, None, _parse_ps)


#: Work still open this long is exported as a live snapshot, when the variable is unset.
DEFAULT_SNAPSHOT_AFTER = 10.0


def snapshot_after() -> float:
    """``HANGGUARD_SNAPSHOT_AFTER`` in seconds (10 when unset; ``none``: ``math.inf``)."""
    return _read(
        ENV_SNAPSHOT_AFTER, DEFAULT_SNAPSHOT_AFTER, _duration(ENV_SNAPSHOT_AFTER, allow_zero=False)
    )


def record_on_sigterm() -> bool:
    """``HANGGUARD_RECORD_ON_SIGTERM``: whether setup_tracing records the hang on SIGTERM."""
    return _read(ENV_RECORD_ON_SIGTERM, True, _parse_bool(ENV_RECORD_ON_SIGTERM))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A snapshot of the effective configuration (what ``hangguard config`` shows)."""

    default_budget: float = DEFAULT_OP_BUDGET
    budgets: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    join_timeout: float = math.inf
    mcp_timeout: float = DEFAULT_MCP_TIMEOUT
    mcp_connect_timeout: float = DEFAULT_MCP_CONNECT_TIMEOUT
    mcp_breaker: tuple[int, float] | None = None
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    cancel_events: int = DEFAULT_CANCEL_EVENTS
    serial: bool = False
    loop_block_threshold: float | None = None
    ps: bool | None = None
    snapshot_after: float = DEFAULT_SNAPSHOT_AFTER
    record_on_sigterm: bool = True


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One ``HANGGUARD_*`` variable: its default as the docs write it, its meaning, how it
    is read (the getter the library calls on use) and the :class:`Config` field it fills."""

    name: str
    default: str
    doc: str
    read: Callable[[], object]
    field: str


#: Every variable, once: the getters, :class:`Config`, ``hangguard config`` and the docs
#: test all read this table.
TABLE: tuple[EnvVar, ...] = tuple(
    EnvVar(name, _DOCS[name][0], _DOCS[name][1], read, config_field)
    for name, read, config_field in (
        (ENV_DEFAULT_BUDGET, default_budget, "default_budget"),
        (ENV_BUDGETS, budgets, "budgets"),
        (ENV_JOIN_TIMEOUT, join_timeout, "join_timeout"),
        (ENV_MCP_TIMEOUT, mcp_timeout, "mcp_timeout"),
        (ENV_MCP_CONNECT_TIMEOUT, mcp_connect_timeout, "mcp_connect_timeout"),
        (ENV_MCP_BREAKER, mcp_breaker, "mcp_breaker"),
        (ENV_RETRY_ATTEMPTS, retry_attempts, "retry_attempts"),
        (ENV_CANCEL_GRACE, cancel_grace, "cancel_grace"),
        (ENV_CANCEL_EVENTS, cancel_events, "cancel_events"),
        (ENV_SERIAL, serial, "serial"),
        (ENV_LOOP_BLOCK_THRESHOLD, loop_block_threshold, "loop_block_threshold"),
        (ENV_PS, ps, "ps"),
        (ENV_SNAPSHOT_AFTER, snapshot_after, "snapshot_after"),
        (ENV_RECORD_ON_SIGTERM, record_on_sigterm, "record_on_sigterm"),
    )
)

#: Every variable, with its default as text and its meaning (derived from :data:`TABLE`).
ENV_VARS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {v.name: (v.default, v.doc) for v in TABLE}
)


def load_config() -> Config:
    """Read every ``HANGGUARD_*`` variable now; raises :class:`ConfigError` on the first bad one."""
    return Config(**{v.field: v.read() for v in TABLE})  # type: ignore[arg-type]
