"""Structured logs: KIT_LOG_FORMAT=json writes one JSON object per line, with the context."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from kit.protocol import CORRELATION_ID, MessageLike
from kit.telemetry import TRACEPARENT, active, current_instance, current_record

__all__ = ["LOG_FORMATS", "TEXT_FORMAT", "JsonFormatter", "context_fields", "log_format_error"]

LOG_FORMATS = ("text", "json")
"""The values of KIT_LOG_FORMAT (and ``kit --log-format``); text is the default."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The human-readable format: time, level, logger and message."""

# Any: every Any here is a JSON value (or a value of a log call's `extra`, shown with str()).

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16
_CORE = ("time", "level", "logger", "message")
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None, None, None))
) | {"message", "asctime", "taskName"}
"""The attributes every LogRecord has: anything else on a record came from ``extra``."""


def log_format_error(value: str) -> str | None:
    """Why `value` is not a log format (text or json), or None if it is one."""
    if value.strip().lower() in LOG_FORMATS:
        return None
    return f"{value!r} is not a log format ({', '.join(LOG_FORMATS)})"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, for log collectors.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``; where
    they apply ``service`` and ``instance`` (the runtime whose task logs), ``topic``,
    ``partition``, ``offset`` and ``correlation_id`` (the record whose handler runs),
    ``trace_id`` and ``span_id`` (the current OpenTelemetry span, else the record's
    ``traceparent``); ``traceback`` for an exception and ``stack`` for ``stack_info``; then
    each field given in ``extra=``. A value JSON lacks is written as its ``str()``. It never
    raises: a record it cannot format is written with the reason as ``log_error``.
    """

    def __init__(self) -> None:
        super().__init__()
        active.records = True  # handlers' records are then in current_record (kit.telemetry)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        try:
            return json.dumps(self.fields(record), default=_text, ensure_ascii=False)
        except Exception as exc:  # a log call must never fail
            return json.dumps(
                {
                    "time": _time(record.created),
                    "level": str(getattr(record, "levelname", "")),
                    "logger": str(getattr(record, "name", "")),
                    "message": _text(getattr(record, "msg", "")),
                    "log_error": _text(exc),
                },
                default=_text,
            )

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's fields, in the order they are written."""
        out: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(context_fields())
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _CORE and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


def context_fields() -> dict[str, Any]:
    """What the running task is about: service and instance, the record in hand (topic,
    partition, offset, correlation id) and the trace; empty outside a runtime."""
    out: dict[str, Any] = {}
    try:
        instance = current_instance.get()
        if instance is not None:
            out["service"], out["instance"] = instance
        record = current_record.get()
        headers: dict[str, bytes | str | None] = {}
        if record is not None:
            out.update(topic=record.topic(), partition=record.partition(), offset=record.offset())
            headers = _headers(record)
            correlation = headers.get(CORRELATION_ID)
            if correlation is not None:
                out["correlation_id"] = _decoded(correlation)
        out.update(_trace(headers.get(TRACEPARENT)))
    except Exception as exc:  # a record or span that fails: the rest is logged
        out["log_error"] = _text(exc)
    return out


def _headers(record: MessageLike) -> dict[str, bytes | str | None]:
    return {key: value for key, value in record.headers() or ()}


def _trace(traceparent: bytes | str | None) -> dict[str, str]:
    """trace_id and span_id: OpenTelemetry's current span if valid, else the header's."""
    span = _otel_span()
    if span is not None:
        return span
    if traceparent is None:
        return {}
    match = _TRACEPARENT.match(_decoded(traceparent).strip().lower())
    if match is None or match[1] == _NO_TRACE or match[2] == _NO_SPAN:
        return {}
    return {"trace_id": match[1], "span_id": match[2]}


def _otel_span() -> dict[str, str] | None:
    """The current OpenTelemetry span's ids, if one is recording here.

    OpenTelemetry is not imported for this: a span can only be current once something has
    imported ``opentelemetry.trace``, so without it this costs one dictionary look-up.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def _decoded(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _text(value: object) -> str:
    """str(value), or its repr if even str() raises."""
    try:
        return str(value)
    except Exception:  # a log call must never fail
        return object.__repr__(value)
