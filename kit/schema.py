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
            schema = Schema._parse(expanded, str(self._files[name]))
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
        if kind in NAMED_TYPES and "name" in raw:
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


def _path_of(raw: Any, exc: Exception) -> str:
    """Best-effort JSON path for a parse error: the field whose name the message mentions."""
    text = str(exc)
    if isinstance(raw, dict):
        for i, f in enumerate(raw.get("fields", []) or []):
            if isinstance(f, dict) and f.get("name") and repr(f["name"]) in text:
                return f"$.fields[{i}]"
    return "$"


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
        root = _find_schemas(Path(start) if start else Path.cwd()) or Path.cwd() / "schemas"
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
    """The repository from KIT_SCHEMAS_DIR, else the nearest `schemas/` above `start` or cwd.

    Kept for existing callers: the same as `repository_for(start)`.
    """
    return repository_for(start)


_REPOSITORIES: dict[str, SchemaRepository] = {}
"""Repositories by resolved folder, so that every caller shares one per folder."""


def _find_schemas(start: Path) -> Path | None:
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / "schemas").is_dir():
            return folder / "schemas"
    return None
