"""Load Avro schemas from `schemas/`, and check that pydantic models agree with them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro.schema as avro_schema

from kit.config import Settings, load_settings
from kit.errors import SchemaError

__all__ = [
    "Schema",
    "SchemaProblem",
    "SchemaRepository",
    "default_repository",
    "fingerprint",
    "nearest_schemas_dir",
    "repository_for",
]

# Any: every Any here is a JSON value of an Avro schema (its definition, parsed or raw).

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED_TYPES = ("record", "error", "enum", "fixed")
"""Avro types that carry a name (and a namespace) and can be referenced by it."""


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
        """Parse a complete (self-contained) schema definition, e.g. read from the schema topic.

        Each named type is defined at its first use and referenced by name after it, as the
        Avro specification (and `Schema.text`) writes it.
        """
        raw = json.loads(definition) if isinstance(definition, str) else definition
        return cls._parse(raw, source)

    @classmethod
    def _parse(cls, node: Any, source: str) -> Schema:
        """Parse once; the canonical form, fingerprint and text all come from that one parse.

        No `expand=True`: it inlines a named type at every use, and that output does not
        parse again when a type is used twice ("redefined named type").
        """
        try:
            parsed = avro_schema.parse_schema(node)  # with fastavro's "already parsed" hint
        except Exception as exc:
            raise SchemaError(f"{source or '<schema>'}: {exc}") from exc
        if not isinstance(parsed, dict):
            raise SchemaError(f"{source or '<schema>'}: a schema file must define a named type")
        canonical = avro_schema.to_parsing_canonical_form(parsed)  # reuses the parse (hint)
        clean = _strip_internal(parsed)
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
        """Read every `.avsc` file under `root` (or `root` itself, a file), in any order."""
        pending = self._read(root)
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
                    message = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                    self._problem(path, _locate(raw, exc), message)
                    del pending[path]
                    continue
                del pending[path]
                clash = [(p, n) for p, n in _named_nodes(raw) if n in self._files]
                if clash:
                    where, name = clash[0]
                    self._problem(
                        path, where, f"{name!r} is already defined in {self._files[name]}"
                    )
                    continue
                for where, message in _lint(raw, trial):
                    self._problem(path, where, message)
                self._files.update((name, path) for name in set(trial) - set(named))
                named = trial
                progress = True
        for path, raw in pending.items():
            self._problem(
                path, _locate(raw, errors[path]), f"unknown type referenced: {errors[path]}"
            )
        for name in sorted(self._files):
            self.add(Schema._parse(_expand(named, name), str(self._files[name])))

    def _read(self, root: Path) -> dict[Path, Any]:
        """The JSON of each `.avsc` file under `root` (or of `root`, a file), by path."""
        if not root.exists():
            self._problem(root, "$", "schema folder does not exist")
        pending: dict[Path, Any] = {}
        for path in [root] if root.is_file() else sorted(root.rglob("*.avsc")):
            try:
                pending[path] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                self._problem(path, "$", f"not valid JSON: {exc}")
        return pending

    def _problem(self, path: Path, where: str, message: str) -> None:
        self.problems.append(SchemaProblem(str(path), where, message))

    def raise_problems(self) -> None:
        """Raise one SchemaError listing every problem found while loading."""
        if self.problems:
            raise SchemaError("invalid schemas:\n  " + "\n  ".join(map(str, self.problems)))


def _walk(node: Any, path: str = "$", namespace: str = "") -> Iterator[tuple[str, Any, str, bool]]:
    """Every schema node and every record field of a raw schema, in document order:
    (JSON path, node, enclosing namespace, whether the node is a record field)."""
    yield path, node, namespace, False
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]", namespace)
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in NAMED_TYPES and isinstance(node.get("name"), str):
        namespace = _full_name(node, namespace).rpartition(".")[0]
    fields = node.get("fields") if kind in ("record", "error") else None
    for i, f in enumerate(fields if isinstance(fields, list) else []):
        yield f"{path}.fields[{i}]", f, namespace, True
        if isinstance(f, dict) and "type" in f:
            yield from _walk(f["type"], f"{path}.fields[{i}].type", namespace)
    for key in ("items", "values"):
        if key in node:
            yield from _walk(node[key], f"{path}.{key}", namespace)
    if isinstance(kind, (dict, list)):
        yield from _walk(kind, f"{path}.type", namespace)


def _full_name(node: dict[str, Any], namespace: str) -> str:
    """The full name of a named type defined inside `namespace`."""
    name = str(node["name"])
    namespace = node.get("namespace", namespace)
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _named_nodes(raw: Any) -> Iterator[tuple[str, str]]:
    """(JSON path, full name) of each named type a raw schema defines, in document order."""
    for path, node, ns, is_field in _walk(raw):
        if not is_field and isinstance(node, dict) and node.get("type") in NAMED_TYPES:
            if isinstance(node.get("name"), str):
                yield path, _full_name(node, ns)


def _definition(raw: Any, full_name: str) -> str:
    """The JSON path where a raw schema defines the named type `full_name` (the last time)."""
    return ([path for path, name in _named_nodes(raw) if name == full_name] or ["$"])[-1]


def _locate(raw: Any, exc: Exception) -> str:
    """The JSON path of what a fastavro parse error is about, else "$" (fastavro names a
    type, a field or a value, but not where it is)."""
    text = str(exc)
    if isinstance(exc, avro_schema.UnknownType):
        for path, node, ns, _ in _walk(raw):
            if isinstance(node, str) and exc.name in (node, f"{ns}.{node}"):
                return path
    if text.startswith("redefined named type: "):
        return _definition(raw, text.split(": ", 1)[1])
    for path, node, _, is_field in _walk(raw):
        if not isinstance(node, dict):
            continue
        if is_field and ("name" not in node or "type" not in node) and "missing" in text:
            return path
        if is_field and "default" in node and f"<{node['default']}>" in text:
            return f"{path}.default"
        if not is_field and node.get("type") == "enum" and "symbol" in text:
            return f"{path}.symbols"
        if not is_field and node.get("type") == "fixed" and "size" in text:
            return path
    return "$"


def _lint(raw: Any, named: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """What fastavro accepts but the Avro specification (and Apache Avro) rejects: a field
    name used twice in a record, a union default that is not of the union's first branch."""
    for path, node, ns, is_field in _walk(raw):
        if is_field or not isinstance(node, dict) or not isinstance(node.get("fields"), list):
            continue
        inner = _full_name(node, ns).rpartition(".")[0] if "name" in node else ns
        seen: set[str] = set()
        for i, f in enumerate(node["fields"]):
            name, kind = f.get("name"), f.get("type")
            if name in seen:
                yield f"{path}.fields[{i}].name", f"duplicate field name {name!r}"
            seen.add(name)
            if isinstance(kind, list) and kind and "default" in f:
                if not _fits(kind[0], f["default"], named, inner):
                    message = f"default {f['default']!r} is not a {kind[0]!r}, the union's first"
                    yield f"{path}.fields[{i}].default", f"{message} branch (Avro requires it)"


_DEFAULT_SHAPES: dict[str, type | tuple[type, ...]] = {
    **{"null": type(None), "boolean": bool},
    **dict.fromkeys(("int", "long"), int),
    **dict.fromkeys(("float", "double"), (int, float)),
    **dict.fromkeys(("bytes", "string", "enum", "fixed"), str),
    **{"array": list, "map": dict, "record": dict, "error": dict},
}
"""The JSON type of a default value, by Avro type."""


def _fits(schema: Any, value: Any, named: dict[str, Any], namespace: str) -> bool:
    """Whether a JSON default has the shape of `schema` (a record default: an object, ...)."""
    if isinstance(schema, str) and schema not in _DEFAULT_SHAPES:
        schema = named.get(schema) or named.get(f"{namespace}.{schema}")
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if not isinstance(kind, str) or kind not in _DEFAULT_SHAPES:
        return not isinstance(kind, (str, dict)) or _fits(kind, value, named, namespace)
    if kind == "enum":
        return value in schema.get("symbols", ())
    shape = _DEFAULT_SHAPES[kind]
    return isinstance(value, shape) and (kind == "boolean" or not isinstance(value, bool))


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
            if out.get("type") in NAMED_TYPES and "name" in out:
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


def repository_for(
    start: Path | str | None = None,
    schemas_dir: Path | str | None = None,
    *,
    settings: Settings | None = None,
) -> SchemaRepository:
    """The schema repository for code at `start`: the one schema-resolution rule of kit.

    The folder is `schemas_dir` if given, else `Settings.schemas_dir` (KIT_SCHEMAS_DIR;
    `settings` if given, else `load_settings()`), else the nearest `schemas/` folder above
    `start` (a module's file or a folder; default: the current directory), else
    `./schemas`. One repository is loaded per resolved folder and shared by every caller.
    """
    if not schemas_dir:
        schemas_dir = (settings if settings is not None else load_settings()).schemas_dir
    if schemas_dir:
        root = Path(schemas_dir)
    else:
        root = nearest_schemas_dir(Path(start) if start else Path.cwd()) or Path.cwd() / "schemas"
    key = str(root.resolve())
    repo = _REPOSITORIES.get(key)
    if repo is None:
        repo = SchemaRepository(root)
        _REPOSITORIES[key] = repo
    return repo


def repository_of_types(types: Iterable[type], settings: Settings) -> SchemaRepository:
    """The schemas a set of event types is read with (a runtime's, a harness's).

    `settings.schemas_dir` if set, else the repositories the types are bound to (each
    `Event` class keeps the one `repository_for` gave it: the nearest `schemas/` above
    its module), merged when there are several, else the current directory's. With one
    repository (the usual case), it is that same object.
    """
    repos: list[SchemaRepository] = []
    if settings.schemas_dir:
        repos.append(repository_for(settings=settings))
    else:
        for cls in types:
            repo = getattr(cls, "__kit_repository__", None)
            if isinstance(repo, SchemaRepository) and all(repo is not r for r in repos):
                repos.append(repo)
    if not repos:
        return repository_for(settings=settings)
    if len(repos) == 1:
        return repos[0]
    merged = SchemaRepository()
    for repo in repos:
        for schema in repo:
            merged.add(schema)
    return merged


def default_repository(start: Path | str | None = None) -> SchemaRepository:
    """The same as `repository_for(start)`, kept for existing callers."""
    return repository_for(start)


_REPOSITORIES: dict[str, SchemaRepository] = {}
"""Repositories by resolved folder, so that every caller shares one per folder."""


def nearest_schemas_dir(start: Path | str) -> Path | None:
    """The nearest `schemas/` folder in or above `start` (a file or a folder), if any."""
    here = Path(start).resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / "schemas").is_dir():
            return folder / "schemas"
    return None
