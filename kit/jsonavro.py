"""Plain JSON ↔ Avro data, guided by a schema: for the CLI's --json input and JSON output."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from kit.errors import EncodeError
from kit.schema import NAMED_TYPES

__all__ = ["from_json", "to_json"]


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
        if value is None and "null" in schema:
            return None
        errors = []
        for branch in (b for b in schema if b != "null"):
            try:
                return from_json(branch, value, named, path)
            except EncodeError as exc:
                errors.append(str(exc))
        raise EncodeError(f"{path}: no union branch fits {value!r} ({'; '.join(errors)})")
    kind = schema.get("type")
    if kind in NAMED_TYPES and "name" in schema:
        named.setdefault(schema["name"], schema)
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis"):
        return _parse(datetime.fromisoformat, value, path, "an ISO-8601 date-time")
    if logical == "date":
        return _parse(date.fromisoformat, value, path, "an ISO-8601 date")
    if logical in ("time-millis", "time-micros"):
        return _parse(time.fromisoformat, value, path, "an ISO-8601 time")
    if logical == "uuid":
        return _parse(UUID, value, path, "a UUID")
    if logical == "decimal":
        return _parse(lambda v: Decimal(str(v)), value, path, "a decimal number")
    if kind in ("record", "error"):
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


def _parse(fn: Any, value: Any, path: str, what: str) -> Any:
    if not isinstance(value, (str, int, float)):
        raise EncodeError(f"{path}: expected {what}, got {value!r}")
    try:
        result = fn(value)
    except (ValueError, ArithmeticError) as exc:
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
