"""Load Avro schemas from `schemas/`, and check that pydantic models agree with them."""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Union
from uuid import UUID

import fastavro.schema as avro_schema
from pydantic import BaseModel

from kit.errors import SchemaError

__all__ = [
    "Schema",
    "SchemaProblem",
    "SchemaRepository",
    "check_model",
    "default_repository",
    "fingerprint",
]

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def fingerprint(canonical_form: str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a schema's parsing canonical form."""
    return bytes.fromhex(avro_schema.fingerprint(canonical_form, "CRC-64-AVRO"))


@dataclass(frozen=True)
class Schema:
    """One named Avro type, parsed once, with everything it references expanded."""

    full_name: str
    parsed: dict[str, Any] = field(repr=False, compare=False)
    canonical: str = field(repr=False)
    fingerprint: bytes = field(repr=False)
    source: str = ""
    text: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_json(cls, definition: dict[str, Any] | str, source: str = "") -> Schema:
        """Parse a complete (self-contained) schema definition."""
        raw = json.loads(definition) if isinstance(definition, str) else definition
        try:
            parsed = avro_schema.parse_schema(raw, expand=True, _write_hint=False)
        except Exception as exc:
            raise SchemaError(f"{source or '<schema>'}: {exc}") from exc
        if not isinstance(parsed, dict):
            raise SchemaError(f"{source or '<schema>'}: a schema file must define a named type")
        return cls._from_parsed(parsed, source)

    @classmethod
    def _from_parsed(cls, expanded: dict[str, Any], source: str) -> Schema:
        clean = _strip_internal(expanded)
        canonical = avro_schema.to_parsing_canonical_form(clean)
        parsed: dict[str, Any] = avro_schema.parse_schema(clean)  # type: ignore[assignment]
        name = clean.get("name", clean.get("type"))
        return cls(str(name), parsed, canonical, fingerprint(canonical), source, json.dumps(clean))

    @property
    def definition(self) -> dict[str, Any]:
        """The full schema as plain JSON-able data (with defaults and logical types)."""
        result: dict[str, Any] = json.loads(self.text)
        return result


def _strip_internal(node: Any) -> Any:
    """A copy of a fastavro-parsed schema without its private `__...` keys."""
    if isinstance(node, list):
        return [_strip_internal(n) for n in node]
    if isinstance(node, dict):
        return {k: _strip_internal(v) for k, v in node.items() if not k.startswith("__")}
    return node


@dataclass(frozen=True)
class SchemaProblem:
    """One problem found by `SchemaRepository.problems`: a file, a JSON path, a message."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class SchemaRepository:
    """Every named type found in a folder of `.avsc` files, by full name and by fingerprint."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._by_name: dict[str, Schema] = {}
        self._by_fingerprint: dict[bytes, Schema] = {}
        self._files: dict[str, Path] = {}
        self.problems: list[SchemaProblem] = []
        if self.root is not None:
            self._load(self.root)

    def __contains__(self, full_name: object) -> bool:
        return full_name in self._by_name

    def __iter__(self) -> Iterator[Schema]:
        return iter(self._by_name.values())

    def get(self, full_name: str) -> Schema:
        """The schema with this full name; SchemaError when there is none."""
        try:
            return self._by_name[full_name]
        except KeyError:
            where = f" in {self.root}" if self.root else ""
            known = ", ".join(sorted(self._by_name)) or "none"
            raise SchemaError(f"no schema named {full_name!r}{where} (known: {known})") from None

    def by_fingerprint(self, fp: bytes) -> Schema | None:
        """The schema whose canonical form has this CRC-64-AVRO fingerprint, if known."""
        return self._by_fingerprint.get(fp)

    def add(self, schema: Schema) -> None:
        """Register a schema, e.g. a writer schema learned from the schema topic."""
        self._by_fingerprint.setdefault(schema.fingerprint, schema)
        self._by_name.setdefault(schema.full_name, schema)

    def file_of(self, full_name: str) -> str:
        """The file a named type was defined in, for messages."""
        path = self._files.get(full_name)
        return str(path) if path else full_name

    def _load(self, root: Path) -> None:
        if not root.is_dir():
            self.problems.append(SchemaProblem(str(root), "$", "schema folder does not exist"))
            return
        pending: dict[Path, dict[str, Any]] = {}
        for path in sorted(root.rglob("*.avsc")):
            try:
                pending[path] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                self.problems.append(SchemaProblem(str(path), "$", f"not valid JSON: {exc}"))
        named: dict[str, Any] = {}
        errors: dict[Path, Exception] = {}
        progress = True
        while pending and progress:
            progress = False
            for path, raw in list(pending.items()):
                trial = dict(named)
                try:
                    avro_schema.parse_schema(raw, named_schemas=trial, _write_hint=False)
                except avro_schema.UnknownType as exc:
                    errors[path] = exc
                    continue
                except Exception as exc:
                    self.problems.append(SchemaProblem(str(path), _path_of(raw, exc), str(exc)))
                    del pending[path]
                    continue
                new = set(trial) - set(named)
                clash = [n for n in _defined_names(raw) if n in self._files]
                if clash:
                    other = self._files[clash[0]]
                    self.problems.append(
                        SchemaProblem(str(path), "$", f"{clash[0]!r} is already defined in {other}")
                    )
                    del pending[path]
                    continue
                named = trial
                for name in new:
                    self._files[name] = path
                del pending[path]
                progress = True
        for path in pending:
            self.problems.append(
                SchemaProblem(str(path), "$", f"unknown type referenced: {errors[path]}")
            )
        for name in sorted(self._files):
            expanded = _expand(named, name)
            schema = Schema._from_parsed(expanded, str(self._files[name]))
            self.add(schema)

    def raise_problems(self) -> None:
        """Raise one SchemaError listing every problem found while loading."""
        if self.problems:
            raise SchemaError("invalid schemas:\n  " + "\n  ".join(map(str, self.problems)))


def _defined_names(raw: Any, namespace: str = "") -> list[str]:
    """Full names of the named types a raw schema defines."""
    out: list[str] = []
    if isinstance(raw, list):
        for item in raw:
            out += _defined_names(item, namespace)
    elif isinstance(raw, dict):
        kind = raw.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in raw:
            name = raw["name"]
            ns = raw.get("namespace", namespace)
            full = name if "." in name or not ns else f"{ns}.{name}"
            out.append(full)
            namespace = full.rsplit(".", 1)[0] if "." in full else ""
        for f in raw.get("fields", []) or []:
            out += _defined_names(f.get("type"), namespace)
        for key in ("items", "values"):
            if key in raw:
                out += _defined_names(raw[key], namespace)
        if isinstance(kind, (dict, list)):
            out += _defined_names(kind, namespace)
    return out


def _expand(named: dict[str, Any], name: str) -> dict[str, Any]:
    """A named type with every named reference inlined at its first use."""
    seen: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES or node not in named:
                return node
            if node in seen:
                return node
            seen.add(node)
            return walk(named[node])
        if isinstance(node, list):
            return [walk(n) for n in node]
        if isinstance(node, dict):
            out = {k: v for k, v in node.items() if not k.startswith("__")}
            if out.get("type") in ("record", "error", "enum", "fixed") and "name" in out:
                seen.add(out["name"])
            if "fields" in out:
                out["fields"] = [{**f, "type": walk(f["type"])} for f in out["fields"]]
            for key in ("items", "values"):
                if key in out:
                    out[key] = walk(out[key])
            if isinstance(out.get("type"), (dict, list)):
                out["type"] = walk(out["type"])
            return out
        return node

    return walk(name)  # type: ignore[no-any-return]


def _path_of(raw: Any, exc: Exception) -> str:
    """Best-effort JSON path for a parse error: the field whose name the message mentions."""
    text = str(exc)
    if isinstance(raw, dict):
        for i, f in enumerate(raw.get("fields", []) or []):
            if isinstance(f, dict) and f.get("name") and repr(f["name"]) in text:
                return f"$.fields[{i}]"
    return "$"


def default_repository(start: Path | str | None = None) -> SchemaRepository:
    """The repository from KIT_SCHEMAS_DIR, else the nearest `schemas/` above `start` or cwd."""
    env = os.environ.get("KIT_SCHEMAS_DIR")
    if env:
        root = Path(env)
    else:
        root = _find_schemas(Path(start) if start else Path.cwd()) or Path.cwd() / "schemas"
    key = str(root.resolve())
    repo = _REPOSITORIES.get(key)
    if repo is None:
        repo = SchemaRepository(root)
        _REPOSITORIES[key] = repo
    return repo


_REPOSITORIES: dict[str, SchemaRepository] = {}


def _find_schemas(start: Path) -> Path | None:
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / "schemas").is_dir():
            return folder / "schemas"
    return None


# --- model <-> schema agreement ---------------------------------------------------------


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
        if node.get("type") in ("record", "error", "enum", "fixed") and "name" in node:
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
