"""``hangguard config``: the effective configuration, where each value came from, and errors.

Every ``HANGGUARD_*`` variable of :data:`hangguard._config.ENV_VARS` is parsed by its own
getter, so a bad value is reported naming the variable, the value and what would be
accepted; every other one is still shown. The OpenTelemetry variables that decide where
traces go are listed too::

    $ HANGGUARD_BUDGETS=SearchOp=30s hangguard config
    $ hangguard config --json | jq .budgets
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import _config
from .._config import ENV_JAEGER_UI, ENV_TRACE_FILE
from .._exceptions import ConfigError
from ..tracing._settings import OTEL_VARS, check_otel_env
from ..tracing._setup import TracingSettings, resolve_settings
from ._defaults import DEFAULT_JAEGER_UI

__all__ = [
    "CLI_ENV_VARS",
    "DEFAULT_JAEGER_UI",
    "OTEL_ENV_VARS",
    "ConfigReport",
    "EnvRow",
    "collect",
    "print_config",
]


#: Variables only the command reads, with their default and meaning.
CLI_ENV_VARS: Final[Mapping[str, tuple[str, str]]] = {
    ENV_JAEGER_UI: (DEFAULT_JAEGER_UI, "Jaeger UI base for the trace link of hangguard demo"),
}

#: The variables that decide whether and where traces go: read by
#: :func:`hangguard.setup_tracing` (and the SDK's exporters), with their default and meaning.
#: The ``OTEL_*`` ones come from the table their parsers are in.
OTEL_ENV_VARS: Final[Mapping[str, tuple[str, str]]] = {
    ENV_TRACE_FILE: ("", "with no OTLP endpoint, also append finished spans to this file"),
    **{name: (var.default, var.description) for name, var in OTEL_VARS.items()},
}

# Values worth hiding: headers usually carry an API key.
_SECRET: Final = frozenset(
    {
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvRow:
    """One variable: its raw text, where it came from, and its parsed value or error."""

    name: str
    raw: str | None
    default: str
    description: str
    value: Any = None
    error: str | None = None

    @property
    def source(self) -> str:
        return "default" if self.raw is None else "env"

    def shown(self) -> str:
        """The value as the table shows it."""
        if self.error is not None:
            return f"{self.raw!r} (invalid)"
        if self.name in _SECRET and self.raw:
            return "(set, hidden)"
        if self.value is not None:
            return _text(self.value)
        return self.raw or self.default or "(unset)"

    def to_json(self) -> dict[str, Any]:
        raw = "(hidden)" if self.name in _SECRET and self.raw else self.raw
        return {
            "name": self.name,
            "value": _jsonable(self.value) if self.value is not None else raw,
            "raw": raw,
            "source": self.source,
            "default": self.default,
            "description": self.description,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReport:
    """Everything ``hangguard config`` shows; ``errors`` are the variables that do not parse."""

    hangguard: list[EnvRow]
    tracing: list[EnvRow]
    cli: list[EnvRow]
    budgets: Mapping[str, float] = field(default_factory=dict)
    settings: TracingSettings | None = None
    tracing_error: ConfigError | None = None
    unknown: list[str] = field(default_factory=list)
    #: Settings that are valid but have no effect, or only under a condition, and why.
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[tuple[str, str | None, str]]:
        """``(variable, value, message)`` of each bad value."""
        rows = [*self.hangguard, *self.tracing]
        out = [(r.name, r.raw, r.error) for r in rows if r.error is not None]
        e = self.tracing_error
        if e is not None and not any(name == e.name for name, _, _ in out):
            out.append((e.name, None if e.value is None else str(e.value), str(e)))
        return out

    def destination(self) -> str:
        """Where ``setup_tracing()`` would send spans, in words."""
        s = self.settings
        if s is None:
            return "unknown (see the error below)"
        if s.exporter == "otlp":
            return f"OTLP {s.protocol} to {s.traces_endpoint}"
        to_file = f" and appended to {s.trace_file}" if s.trace_file else ""
        return f"kept in the process{to_file} (no OTLP endpoint set)"

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "ok": not self.errors,
            "hangguard": [r.to_json() for r in self.hangguard],
            "budgets": {k: _jsonable(v) for k, v in self.budgets.items()},
            "tracing": [r.to_json() for r in self.tracing],
            "traces": None
            if s is None
            else {
                "exporter": s.exporter,
                "protocol": s.protocol,
                "endpoint": s.traces_endpoint,
                "sampler": s.sampler,
                "trace_file": s.trace_file,
                "timeout": s.traces_timeout,
                "max_queue_size": s.max_queue_size,
                "max_export_batch_size": s.max_export_batch_size,
            },
            "cli": [r.to_json() for r in self.cli],
            "unknown": self.unknown,
            "notes": self.notes,
            "errors": [{"name": n, "value": v, "message": m} for n, v, m in self.errors],
        }


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return "none" if math.isinf(value) else f"{value:g}s"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) or "none"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None  # no limit
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _cannot_append(path: str) -> str | None:
    """Why ``setup_tracing()`` could not open ``path`` for appending, or ``None``.

    Checked without creating the file, so that looking at the configuration changes
    nothing on disk.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        return "it is a directory"
    if os.path.exists(target):
        return None if os.access(target, os.W_OK) else "permission denied"
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        return f"the directory {parent} does not exist"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"permission denied in {parent}"


def _trace_file_findings(settings: TracingSettings) -> tuple[list[str], str | None]:
    """What ``HANGGUARD_TRACE_FILE`` will do: notes on when it has no effect, and the
    error ``setup_tracing()`` would raise for it."""
    path = os.environ.get(ENV_TRACE_FILE, "").strip()
    if not path:
        return [], None
    if settings.exporter == "otlp":
        note = (
            f"{ENV_TRACE_FILE} has no effect: an OTLP endpoint is set "
            f"({settings.traces_endpoint}), so setup_tracing() exports there and writes no file"
        )
        return [note], None
    notes = [
        f"{ENV_TRACE_FILE} is written only by a program that calls hangguard.setup_tracing() "
        "(hangguard never installs tracing by itself)"
    ]
    why = _cannot_append(path)
    if why is None:
        return notes, None
    # The words setup_tracing() raises them with.
    return notes, f"{ENV_TRACE_FILE}={path!r} cannot be opened for appending spans: {why}"


def collect() -> ConfigReport:
    """Read every variable now; bad values become errors in the report, never a raise."""
    env = os.environ
    rows: list[EnvRow] = []
    budgets: Mapping[str, float] = {}
    for var in _config.TABLE:
        name, default, description = var.name, var.default, var.doc
        value: Any = None
        error = None
        try:
            value = var.read()
        except ConfigError as exc:
            error = str(exc)
        if name == _config.ENV_BUDGETS and error is None and value is not None:
            budgets = value
        rows.append(
            EnvRow(
                name=name,
                raw=env.get(name),
                default=default,
                description=description,
                value=value,
                error=error,
            )
        )
    settings: TracingSettings | None = None
    tracing_error: ConfigError | None = None
    try:
        settings = resolve_settings()
    except ConfigError as exc:
        tracing_error = exc
    # Each variable on its own, so every bad one is named, not only the first.
    bad = {n: str(e) for n, e in check_otel_env().items()}
    notes: list[str] = []
    if settings is not None:
        notes, file_error = _trace_file_findings(settings)
        if file_error is not None:
            bad[ENV_TRACE_FILE] = file_error
    if tracing_error is not None and tracing_error.name in OTEL_ENV_VARS:
        bad.setdefault(tracing_error.name, str(tracing_error))
    tracing = [
        EnvRow(name=n, raw=env.get(n), default=d, description=m, error=bad.get(n))
        for n, (d, m) in OTEL_ENV_VARS.items()
    ]
    cli = [
        EnvRow(name=n, raw=env.get(n), default=d, description=m)
        for n, (d, m) in CLI_ENV_VARS.items()
    ]
    known = set(_config.ENV_VARS) | set(OTEL_ENV_VARS) | set(CLI_ENV_VARS)
    unknown = sorted(n for n in env if n.startswith("HANGGUARD_") and n not in known)
    return ConfigReport(
        hangguard=rows,
        tracing=tracing,
        cli=cli,
        budgets=budgets,
        settings=settings,
        tracing_error=tracing_error,
        unknown=unknown,
        notes=notes,
    )


def _table(rows: list[EnvRow]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("variable", style="bold", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("meaning")
    for row in rows:
        style = "red" if row.error else ("cyan" if row.source == "env" else "")
        table.add_row(row.name, row.shown(), row.source, row.description, style=style)
    return table


def _heading(out: Console, text: str) -> None:
    out.print(Text(text, style="bold underline"))


def print_config(out: Console, err: Console, *, as_json: bool) -> int:
    """Show the configuration; returns 2 when a variable is invalid, else 0."""
    report = collect()
    if as_json:
        out.file.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        _heading(out, "hangguard: read when used; an argument given in code wins")
        out.print(_table(report.hangguard))
        out.print()
        _heading(out, f"per-op budgets ({_config.ENV_BUDGETS})")
        budgets_row = next(r for r in report.hangguard if r.name == _config.ENV_BUDGETS)
        if budgets_row.error is not None:
            out.print(Text("  invalid: see the error below", style="red"))
        elif report.budgets:
            for op, seconds in report.budgets.items():
                out.print(f"  {op}: {_text(seconds)}")
        else:
            out.print(f"  none set: every guarded op gets {_config.ENV_DEFAULT_BUDGET}")
        out.print()
        _heading(out, "tracing: read by hangguard.setup_tracing() and the OpenTelemetry SDK")
        out.print(_table(report.tracing))
        out.print(f"  spans are {report.destination()}")
        out.print()
        _heading(out, "command line")
        out.print(_table(report.cli))
    for name in report.unknown:
        err.print(f"warning: {name} is set but hangguard does not read it (a typo?)")
    for note in report.notes:
        err.print(f"note: {note}")
    for _, _, message in report.errors:
        err.print(Text(f"error: {message}", style="red"))
    if report.errors:
        err.print("fix the variables above or unset them (docs/env.md lists every one)")
        return 2
    return 0
