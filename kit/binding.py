"""Check that a pydantic model agrees with its Avro schema, naming field and mismatch."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Union
from uuid import UUID

from pydantic import BaseModel

from kit.errors import SchemaError
from kit.schema import NAMED_TYPES, Schema

__all__ = ["check_model"]

# Any: every Any here is a parsed Avro schema (JSON) or a model field's annotation (any type
# expression, inspected at run time).


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
