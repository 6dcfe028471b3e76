"""Check that a pydantic model agrees with its Avro schema, naming field and mismatch; and
check, on encode, the values fastavro would write but other Avro readers reject."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Union
from uuid import UUID

from fastavro import schemaless_writer
from pydantic import BaseModel
from pydantic_core import SchemaValidator, core_schema

from kit.errors import SchemaError
from kit.schema import NAMED_TYPES, Schema

__all__ = ["EncodeCheck", "check_model", "encode_check", "explain"]

# Any: every Any here is a parsed Avro schema (JSON), a model field's annotation (any type
# expression, inspected at run time), or Avro data (the record about to be encoded).


def check_model(model: type[BaseModel], schema: Schema) -> None:
    """Raise SchemaError naming the schema, field and mismatch where model and schema disagree."""
    problems = list(_check_record(model, schema.parsed, "", _named_types(schema.parsed)))
    if problems:
        where = f"{schema.full_name} ({schema.source})" if schema.source else schema.full_name
        raise SchemaError(
            f"model {model.__module__}.{model.__qualname__} does not match schema {where}:\n  "
            + "\n  ".join(problems)
        )


def _named_types(node: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type defined inside a parsed schema, by full name."""
    out = {} if out is None else out
    if isinstance(node, list):
        for item in node:
            _named_types(item, out)
    elif isinstance(node, dict):
        if node.get("type") in NAMED_TYPES and "name" in node:
            out.setdefault(node["name"], node)
        for f in node.get("fields", []) or []:
            _named_types(f.get("type"), out)
        for key in ("items", "values", "type"):
            if isinstance(node.get(key), (dict, list)):
                _named_types(node[key], out)
    return out


def _check_record(
    model: type[BaseModel], record: dict[str, Any], prefix: str, named: dict[str, Any]
) -> Iterator[str]:
    fields = model.model_fields
    avro_fields = {f["name"]: f for f in record.get("fields", [])}
    by_avro_name = {(info.alias or name): name for name, info in fields.items()}
    for avro_name, avro_field in avro_fields.items():
        path = f"{prefix}{avro_name}"
        if avro_name not in by_avro_name:
            yield f"field {path!r}: in the schema but missing from the model"
            continue
        annotation = fields[by_avro_name[avro_name]].annotation
        yield from _check_type(annotation, avro_field["type"], path, named)
    for avro_name in by_avro_name:
        if avro_name not in avro_fields:
            yield f"field {prefix}{avro_name!r}: in the model but not in the schema"


_LOGICAL = {
    "timestamp-millis": (datetime,),
    "timestamp-micros": (datetime,),
    "local-timestamp-millis": (datetime,),
    "local-timestamp-micros": (datetime,),
    "date": (date,),
    "time-millis": (time,),
    "time-micros": (time,),
    "uuid": (UUID, str),
    "decimal": (Decimal,),
}
_PRIMITIVE_PY = {
    "string": (str,),
    "int": (int,),
    "long": (int,),
    "float": (float,),
    "double": (float,),
    "boolean": (bool,),
    "bytes": (bytes,),
    "null": (type(None),),
}


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        base = schema.get("name") or schema.get("type")
        return f"{base} ({logical})" if logical else str(base)
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe(s) for s in schema) + "]"
    return str(schema)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def _check_type(annotation: Any, schema: Any, path: str, named: dict[str, Any]) -> Iterator[str]:
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is Any:
        return
    members = _union_members(annotation)
    nullable_model = members is not None and type(None) in members
    if isinstance(schema, list):
        nullable_schema = "null" in schema
        if nullable_model and not nullable_schema:
            yield f"field {path!r}: model allows None but union {_describe(schema)} has no null"
            return
        if nullable_schema and not nullable_model:
            yield (
                f"field {path!r}: schema is nullable ({_describe(schema)}) but model type "
                f"{_type_name(annotation)} is not Optional"
            )
            return
        branches = [s for s in schema if s != "null"]
        model_branches = [m for m in (members or (annotation,)) if m is not type(None)]
        if len(branches) == 1 and len(model_branches) == 1:
            yield from _check_type(model_branches[0], branches[0], path, named)
            return
        for branch in branches:
            if not any(not list(_check_type(m, branch, path, named)) for m in model_branches):
                yield f"field {path!r}: union branch {_describe(branch)} has no matching model type"
        return
    if nullable_model:
        yield (
            f"field {path!r}: schema type {_describe(schema)} is not nullable but the model "
            f"type is Optional"
        )
        return
    if members is not None:
        yield f"field {path!r}: schema type {_describe(schema)} but model type is a union"
        return
    yield from _check_single(annotation, schema, path, named)


def _check_single(annotation: Any, schema: Any, path: str, named: dict[str, Any]) -> Iterator[str]:
    kind = schema.get("type") if isinstance(schema, dict) else schema
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    origin = typing.get_origin(annotation) or annotation
    mismatch = (
        f"field {path!r}: schema type {_describe(schema)} but model type {_type_name(annotation)}"
    )
    if logical in _LOGICAL:
        if not (isinstance(origin, type) and issubclass(origin, _LOGICAL[logical])):
            yield mismatch
        return
    if kind in _PRIMITIVE_PY or kind == "fixed":
        expected = _PRIMITIVE_PY.get(kind, (bytes,))
        ok = isinstance(origin, type) and issubclass(origin, expected)
        if ok and expected == (int,) and issubclass(origin, bool):
            ok = False
        if ok and issubclass(origin, Enum):
            ok = False
        if not ok:
            yield mismatch
        return
    if kind == "enum":
        if not (isinstance(origin, type) and issubclass(origin, Enum)):
            yield mismatch
            return
        if not issubclass(origin, str):
            yield f"field {path!r}: enum {origin.__name__} must be a str Enum (enum.StrEnum)"
            return
        values = {m.value for m in origin}
        extra = values - set(schema["symbols"])
        if extra:
            yield f"field {path!r}: enum {origin.__name__} has values not in the schema: {extra}"
        missing = [s for s in schema["symbols"] if s not in values]
        if missing:
            yield (
                f"field {path!r}: enum {origin.__name__} lacks symbols of schema enum "
                f"{schema.get('name')}: {', '.join(map(repr, missing))} (a record with one "
                f"of them could not be decoded)"
            )
        return
    if kind == "array":
        if origin is not list:
            yield mismatch
            return
        (item,) = typing.get_args(annotation) or (Any,)
        yield from _check_type(item, schema["items"], f"{path}[]", named)
        return
    if kind == "map":
        args = typing.get_args(annotation)
        if origin is not dict or (args and args[0] is not str):
            yield mismatch
            return
        yield from _check_type(args[1] if args else Any, schema["values"], f"{path}{{}}", named)
        return
    if kind in ("record", "error"):
        if not (isinstance(origin, type) and issubclass(origin, BaseModel)):
            yield mismatch
            return
        yield from _check_record(origin, schema, f"{path}.", named)
        return
    yield mismatch


# On encode: what fastavro writes without complaint but other Avro readers reject.

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
_RANGES = {"int": (*INT_RANGE, 32), "long": (*LONG_RANGE, 64)}
_TIMESTAMPS = ("timestamp-millis", "timestamp-micros")
_WRITER_CHECKS_LONG = schemaless_writer.__module__ == "fastavro._write"
"""fastavro's compiled writer raises OverflowError for a long past 64 bits (not for an int
past 32 bits); its pure-Python writer checks neither, so the check covers long too there."""

EncodeCheck = Callable[[object], object]
"""Raises (pydantic_core.ValidationError) for a record it rejects; the result is unused."""

_CHECKS: dict[bytes, EncodeCheck | None] = {}


def encode_check(schema: Schema) -> EncodeCheck | None:
    """The check a record of `schema` passes before fastavro writes it, or None (nothing to check).

    It rejects an int outside 32 bits (fastavro writes it as a long's bytes, and Apache Avro
    readers refuse it) and a naive datetime in a timestamp (fastavro would take it as UTC).
    It is a pydantic-core validator built once per schema, over only the fields that hold an
    int or a timestamp. A union with more than one non-null branch is left to fastavro,
    which checks int ranges as it picks the branch. `explain` says where a record failed.
    """
    if schema.fingerprint not in _CHECKS:
        named = _named_types(schema.parsed)
        core = _check_schema(schema.parsed, named, frozenset(), not _WRITER_CHECKS_LONG)
        _CHECKS[schema.fingerprint] = (
            None if core is None else SchemaValidator(core).validate_python
        )
    return _CHECKS[schema.fingerprint]


def _check_schema(
    node: Any, named: dict[str, Any], within: frozenset[str], longs: bool
) -> core_schema.CoreSchema | None:
    """The pydantic-core schema checking `node`'s ints (and longs) and timestamps, if any."""
    if isinstance(node, str):
        if node in _RANGES and (node == "int" or longs):
            low, high, _bits = _RANGES[node]
            return core_schema.int_schema(ge=low, le=high)
        if node in named and node not in within:  # a recursive type is checked one level deep
            return _check_schema(named[node], named, within | {node}, longs)
        return None
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        inner = _check_schema(branches[0], named, within, longs) if len(branches) == 1 else None
        if inner is None or "null" not in node:
            return inner
        return core_schema.nullable_schema(inner)
    kind, logical = node.get("type"), node.get("logicalType")
    if logical in _TIMESTAMPS:
        return core_schema.datetime_schema(tz_constraint="aware")
    if logical is not None or kind in ("enum", "fixed"):
        return None
    if kind in ("record", "error"):
        inside = within | {node.get("name", "")}
        fields = {}
        for f in node["fields"]:
            sub = _check_schema(f["type"], named, inside, longs)
            if sub is not None:
                fields[f["name"]] = core_schema.typed_dict_field(sub, required=False)
        return core_schema.typed_dict_schema(fields, extra_behavior="ignore") if fields else None
    if kind in ("array", "map"):
        sub = _check_schema(node["items" if kind == "array" else "values"], named, within, longs)
        if sub is None:
            return None
        return (
            core_schema.list_schema(sub) if kind == "array" else core_schema.dict_schema(None, sub)
        )
    return _check_schema(kind, named, within, longs)


_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "null": type(None),
    "boolean": bool,
    "int": int,
    "long": int,
    "float": (int, float),
    "double": (int, float),
    "string": str,
    "bytes": (bytes, bytearray),
}


def explain(schema: Schema, datum: object) -> str | None:
    """Where and why `datum` does not fit `schema`, as "$.lines[0].sku: problem"; None if it
    looks right. Walks the whole record in Python: call it only after an encode failed."""
    return _explain(schema.parsed, datum, "$", _named_types(schema.parsed))


def _explain(node: Any, value: Any, path: str, named: dict[str, Any]) -> str | None:
    if isinstance(node, str) and node in named:
        node = named[node]
    if isinstance(node, list):
        if value is None and "null" in node:
            return None
        found = [_explain(b, value, path, named) for b in node if b != "null"]
        if any(f is None for f in found) or not found:
            return None
        return found[0] if len(found) == 1 else f"{path}: {value!r} fits no branch of {node}"
    kind = node.get("type") if isinstance(node, dict) else node
    logical = node.get("logicalType") if isinstance(node, dict) else None
    if logical in _TIMESTAMPS and isinstance(value, datetime) and value.tzinfo is None:
        return (
            f"{path}: naive datetime {value.isoformat()} in a {logical} field: give it a "
            f"timezone (e.g. tzinfo=UTC); kit does not guess one"
        )
    if logical is not None:
        return None
    if kind in _RANGES and isinstance(value, int) and not isinstance(value, bool):
        low, high, bits = _RANGES[kind]
        if not low <= value <= high:
            return (
                f"{path}: {value} is out of range for Avro {kind} "
                f"({bits}-bit signed: {low} to {high})"
            )
    if kind in _PYTHON_TYPES:
        ok = isinstance(value, _PYTHON_TYPES[kind])
        return None if ok else f"{path}: expected Avro {kind}, got {value!r}"
    if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind in named):
        return _explain(kind, value, path, named)
    return _explain_complex(node, value, path, named) if isinstance(node, dict) else None


def _explain_complex(
    node: dict[str, Any], value: Any, path: str, named: dict[str, Any]
) -> str | None:
    kind = node["type"]
    expected: dict[str, type | tuple[type, ...]] = {
        "record": dict,
        "error": dict,
        "array": (list, tuple),
        "map": dict,
    }
    if kind in expected and not isinstance(value, expected[kind]):
        return f"{path}: expected a{'n' if kind == 'array' else ''} {kind}, got {value!r}"
    inner: list[tuple[Any, Any, str]] = []
    if kind in ("record", "error"):
        for f in node["fields"]:
            if f["name"] in value:
                inner.append((f["type"], value[f["name"]], f"{path}.{f['name']}"))
            elif "default" not in f:
                return f"{path}.{f['name']}: missing required field"
    elif kind == "array":
        inner = [(node["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    elif kind == "map":
        inner = [(node["values"], v, f"{path}.{k}") for k, v in value.items()]
    elif kind == "enum" and value not in node["symbols"]:
        return f"{path}: {value!r} is not a symbol of enum {node.get('name')}: {node['symbols']}"
    elif kind == "fixed" and not (isinstance(value, bytes) and len(value) == node["size"]):
        return f"{path}: expected {node['size']} bytes (fixed {node.get('name')}), got {value!r}"
    for sub, item, where in inner:
        found = _explain(sub, item, where, named)
        if found is not None:
            return found
    return None
