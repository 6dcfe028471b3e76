"""Plain JSON ↔ Avro data, guided by a schema: for the CLI's --json input and JSON output."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from kit.errors import EncodeError
from kit.schema import NAMED_TYPES

__all__ = ["from_json", "to_json"]

# Any: every Any here is JSON data, Avro data, a parsed Avro schema, or a parser between them.

_LOGICAL: dict[str, tuple[Callable[[Any], Any], str]] = {
    "timestamp-millis": (datetime.fromisoformat, "an ISO-8601 date-time"),
    "timestamp-micros": (datetime.fromisoformat, "an ISO-8601 date-time"),
    "local-timestamp-millis": (datetime.fromisoformat, "an ISO-8601 date-time"),
    "date": (date.fromisoformat, "an ISO-8601 date"),
    "time-millis": (time.fromisoformat, "an ISO-8601 time"),
    "time-micros": (time.fromisoformat, "an ISO-8601 time"),
    "uuid": (UUID, "a UUID"),
    "decimal": (lambda v: Decimal(str(v)), "a decimal number"),
}
"""How `from_json` reads each logical type from JSON: the parser, and what it expects."""


def from_json(schema: Any, value: Any, named: dict[str, Any] | None = None, path: str = "$") -> Any:
    """Convert JSON data (ISO times, base64 bytes, plain unions) to Avro data for `schema`.

    Raises EncodeError naming the JSON path of the first value that does not fit.
    """
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return from_json(named[schema], value, named, path)
        return _primitive(schema, value, path)
    if isinstance(schema, list):
        return _union(schema, value, named, path)
    kind = schema.get("type")
    if kind in NAMED_TYPES and "name" in schema:
        named.setdefault(schema["name"], schema)
    logical = _LOGICAL.get(schema.get("logicalType"))
    if logical is not None:
        parse, what = logical
        return _parse(parse, value, path, what)
    if kind in ("record", "error"):
        return _record(schema, value, named, path)
    if kind == "enum":
        if value not in schema["symbols"]:
            raise EncodeError(f"{path}: {value!r} is not one of {schema['symbols']}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise EncodeError(f"{path}: expected an array")
        return [from_json(schema["items"], v, named, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise EncodeError(f"{path}: expected an object (map)")
        return {k: from_json(schema["values"], v, named, f"{path}.{k}") for k, v in value.items()}
    if kind == "fixed":
        return _primitive("bytes", value, path)
    return from_json(kind, value, named, path)


def _union(schema: list[Any], value: Any, named: dict[str, Any], path: str) -> Any:
    """`value` as the first branch of the union `schema` it fits (null for a JSON null)."""
    if value is None and "null" in schema:
        return None
    errors = []
    for branch in (b for b in schema if b != "null"):
        try:
            return from_json(branch, value, named, path)
        except EncodeError as exc:
            errors.append(str(exc))
    raise EncodeError(f"{path}: no union branch fits {value!r} ({'; '.join(errors)})")


def _record(schema: dict[str, Any], value: Any, named: dict[str, Any], path: str) -> Any:
    """A JSON object as the record `schema`: no unknown fields; missing ones need a default."""
    if not isinstance(value, dict):
        raise EncodeError(f"{path}: expected an object for record {schema.get('name')}")
    fields = {f["name"]: f for f in schema["fields"]}
    extra = set(value) - set(fields)
    if extra:
        raise EncodeError(f"{path}: unknown field(s) {sorted(extra)}")
    out = {}
    for name, field in fields.items():
        if name in value:
            out[name] = from_json(field["type"], value[name], named, f"{path}.{name}")
        elif "default" not in field:
            raise EncodeError(f"{path}.{name}: missing required field")
    return out


def _parse(fn: Any, value: Any, path: str, what: str) -> Any:
    if not isinstance(value, (str, int, float)):
        raise EncodeError(f"{path}: expected {what}, got {value!r}")
    try:
        result = fn(value)
    except (ValueError, ArithmeticError, TypeError) as exc:  # TypeError: a number for a date
        raise EncodeError(f"{path}: expected {what}, got {value!r}") from exc
    if isinstance(result, datetime) and result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result


def _primitive(kind: str, value: Any, path: str) -> Any:
    ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "double": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": isinstance(value, str),
    }.get(kind)
    if ok is None:
        raise EncodeError(f"{path}: unknown type {kind!r}")
    if not ok:
        raise EncodeError(f"{path}: expected {kind}, got {value!r}")
    if kind == "bytes":
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise EncodeError(f"{path}: expected base64 bytes") from exc
    if kind in ("float", "double"):
        return float(value)
    return value


def to_json(value: Any) -> Any:
    """Avro data as JSON-able data: ISO times, base64 bytes, strings for UUID and Decimal."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    return value
