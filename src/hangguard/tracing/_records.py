"""Finished spans as plain, SDK-free records: what the local exporter keeps and the CLI renders.

A :class:`SpanRecord` holds what a tree view needs (ids, parent link, name, times, status,
attributes, events) and round-trips through JSON, one span per line, so spans collected
in another process (``HANGGUARD_TRACE_FILE``) read back the same as in-memory ones. This
module needs only the standard library: ``import hangguard`` works without the SDK.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

__all__ = [
    "AttrValue",
    "SpanEventRecord",
    "SpanRecord",
    "read_span_file",
]

_log = logging.getLogger("hangguard")

#: An attribute value as OpenTelemetry allows it.
AttrValue: TypeAlias = str | bool | int | float | tuple[str | bool | int | float, ...]

_EMPTY: Mapping[str, AttrValue] = MappingProxyType({})


def _freeze(attrs: Mapping[str, Any] | None) -> Mapping[str, AttrValue]:
    if not attrs:
        return _EMPTY
    return MappingProxyType(
        {str(k): tuple(v) if isinstance(v, (list, tuple)) else v for k, v in attrs.items()}
    )


def _jsonable(attrs: Mapping[str, AttrValue]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanEventRecord:
    """One event on a span, e.g. ``hangguard.cancelled`` with its reason and cause."""

    name: str
    timestamp_ns: int
    attributes: Mapping[str, AttrValue] = field(default_factory=lambda: _EMPTY)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the line format of ``HANGGUARD_TRACE_FILE``)."""
        return {
            "name": self.name,
            "timestamp_ns": self.timestamp_ns,
            "attributes": _jsonable(self.attributes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpanEventRecord:
        """The inverse of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            timestamp_ns=int(data["timestamp_ns"]),
            attributes=_freeze(data.get("attributes")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanRecord:
    """A finished span, detached from the SDK.

    Ids are lowercase hex (32 digits for traces, 16 for spans), as Jaeger shows them;
    ``parent_span_id`` is ``None`` for a root span. ``status`` is ``"UNSET"``, ``"OK"``
    or ``"ERROR"``. Build a tree by grouping on ``trace_id`` and linking on
    ``parent_span_id``::

        handle = hangguard.setup_tracing()
        ...
        for rec in handle.local_spans():
            print(rec.name, f"{rec.duration_s:.3f}s", rec.status)
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    kind: str = "INTERNAL"
    status: str = "UNSET"
    status_description: str | None = None
    attributes: Mapping[str, AttrValue] = field(default_factory=lambda: _EMPTY)
    events: tuple[SpanEventRecord, ...] = ()
    resource: Mapping[str, AttrValue] = field(default_factory=lambda: _EMPTY)
    scope: str = ""

    @property
    def duration_s(self) -> float:
        """Wall time from start to end, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    def events_named(self, name: str) -> list[SpanEventRecord]:
        """This span's events called ``name``, in order."""
        return [e for e in self.events if e.name == name]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the line format of ``HANGGUARD_TRACE_FILE``)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "status_description": self.status_description,
            "attributes": _jsonable(self.attributes),
            "events": [e.to_json() for e in self.events],
            "resource": _jsonable(self.resource),
            "scope": self.scope,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpanRecord:
        """The inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on a bad dict."""
        parent = data.get("parent_span_id")
        description = data.get("status_description")
        return cls(
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_span_id=None if parent is None else str(parent),
            name=str(data["name"]),
            kind=str(data.get("kind", "INTERNAL")),
            start_ns=int(data["start_ns"]),
            end_ns=int(data["end_ns"]),
            status=str(data.get("status", "UNSET")),
            status_description=None if description is None else str(description),
            attributes=_freeze(data.get("attributes")),
            events=tuple(SpanEventRecord.from_json(e) for e in data.get("events", ())),
            resource=_freeze(data.get("resource")),
            scope=str(data.get("scope", "")),
        )


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line


def read_span_file(path: str | os.PathLike[str]) -> Sequence[SpanRecord]:
    """Read the spans a process wrote to its ``HANGGUARD_TRACE_FILE`` (JSON lines).

    Raises ``ValueError`` naming the file and line of the first malformed record, except
    for a last line cut short (no newline at its end): a process killed mid-write leaves
    exactly that, so it is skipped with one WARNING on the ``hangguard`` logger::

        spans = hangguard.tracing.read_span_file("trace.jsonl")
    """
    records: list[SpanRecord] = []
    pending: tuple[int, str, Exception] | None = None
    for number, line in _lines(path):
        if pending is not None:
            # A malformed line with more after it: the file is damaged, not cut short.
            bad_number, _, bad_exc = pending
            raise ValueError(
                f"{os.fspath(path)}:{bad_number}: not a span record: {bad_exc}"
            ) from bad_exc
        try:
            records.append(SpanRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            pending = (number, line, exc)
    if pending is not None:
        last_number, last_line, last_exc = pending
        if last_line.endswith("\n"):
            raise ValueError(
                f"{os.fspath(path)}:{last_number}: not a span record: {last_exc}"
            ) from last_exc
        _log.warning(
            "%s:%d: skipped a truncated last line (the writing process stopped mid-write?)",
            os.fspath(path),
            last_number,
        )
    return records
