"""``kit schemas check``: validate the ``.avsc`` files of a schema folder, or one file, and
with ``--against URL`` ask a schema registry whether it would accept each record schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kit.cli.errors import Exit, guarded

if TYPE_CHECKING:
    from kit.schema import Schema
    from kit.transport.registry_format import RegistryFormat

__all__ = ["schemas"]


@click.group("schemas", short_help="Schema tools: kit schemas check validates .avsc files.")
def schemas() -> None:
    """Schema tools."""


@schemas.command("check")
@click.argument("target", metavar="[PATH]", required=False, envvar="KIT_SCHEMAS_DIR")
@click.option(
    "--against",
    metavar="URL",
    default=None,
    help="also ask this schema registry whether it would accept each record schema",
)
@click.option(
    "--subject-strategy",
    type=click.Choice(["topic", "record"]),
    default=None,
    help="--against: subject names, <full name>-value (topic) or <full name> (record); "
    "default KIT_SCHEMA_REGISTRY_SUBJECT_STRATEGY, else topic",
)
@guarded("kit")
def check(target: str | None, against: str | None, subject_strategy: str | None) -> int:
    """Validate every .avsc file of a folder, or one .avsc file.

    PATH defaults to KIT_SCHEMAS_DIR, else the nearest schemas/ folder in or above the
    current directory (as services find theirs). A file or subfolder inside a schemas/
    folder is checked together with the whole folder, where the types it references are,
    and only its own problems and types are shown.

    Exit 0 if all are valid, 1 if any has a problem (each is printed with its file and
    JSON path).

    With --against URL, each valid record schema is then checked against the versions the
    registry holds under its subject (the subject of its default topic, the full name),
    with the subject's compatibility rule, before anything is deployed. The registry's
    verdict decides; kit's own comparison (avro's) says why. Exit 0 if the registry would
    accept every schema, 1 if it would refuse any, 2 if it cannot be reached.
    """
    from kit.schema import SchemaRepository, nearest_schemas_dir

    path = Path(target) if target else nearest_schemas_dir(Path.cwd()) or Path("schemas")
    root, only = _scope(path)
    repo = SchemaRepository(root)

    def shown(file: str) -> bool:
        return only is None or Path(file).resolve() == only or only in Path(file).resolve().parents

    problems = [p for p in repo.problems if shown(p.file)]
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {path}")
        return Exit.FAILED
    found = [s for s in sorted(repo, key=lambda s: s.full_name) if shown(s.source)]
    if against is not None:
        return _against(against, subject_strategy, found, path)
    for schema in found:
        print(f"ok  {schema.full_name:40} {schema.fingerprint.hex()}  {schema.source}")
    print(f"{len(found)} schema(s) in {path} are valid")
    return Exit.OK


def _scope(path: Path) -> tuple[Path, Path | None]:
    """The folder or file to load for `path`, and the part of it to report (None: all).

    A file or a subfolder inside a schemas/ folder is loaded with the whole folder, where
    the types it references are; a file elsewhere is loaded alone.
    """
    from kit.schema import nearest_schemas_dir

    here = path.resolve()
    folder = nearest_schemas_dir(here)
    if folder is not None and folder.resolve() in here.parents:
        return folder, here
    return path, None


_NEW = "no version yet; registering creates the subject"


def _against(url: str, strategy: str | None, found: list[Schema], path: Path) -> int:
    """Print each record schema's verdict from the registry at `url`; the exit code."""
    from kit.config import load_settings
    from kit.transport.registry_format import RegistryFormat

    overrides: dict[str, object] = {"schema_registry_url": url}
    if strategy is not None:
        overrides["schema_registry_subject_strategy"] = strategy
    formats = RegistryFormat(load_settings(None, **overrides))
    formats.check()
    records = [s for s in found if s.definition.get("type") == "record"]
    counts = {"ok": 0, "new": 0, "refused": 0}
    for schema in records:
        verdict, line = _verdict(formats, schema)
        counts[verdict] += 1
        print(f"{verdict + ':':8} {line}")
    print(
        f"{len(records)} record schema(s) in {path} against {url}: {counts['ok']} compatible, "
        f"{counts['new']} new subject(s), {counts['refused']} refused"
    )
    return Exit.FAILED if counts["refused"] else Exit.OK


def _verdict(formats: RegistryFormat, schema: Schema) -> tuple[str, str]:
    """("ok" | "new" | "refused", the line saying why) for one schema.

    The registry's compatibility test decides, against the latest version (every version
    for a *_TRANSITIVE rule), as registering would; a rule of NONE accepts anything.
    ConfigError when the registry cannot answer.
    """
    from confluent_kafka.schema_registry import Schema as RegistrySchema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from kit.errors import ConfigError

    subject = formats.subject(schema.full_name, schema)
    client = formats.client
    refusal = formats.refusal(schema, subject)  # the rule, and kit's own diffs
    head = f"{schema.full_name} -> {subject} ({refusal.rule})"
    candidate = RegistrySchema(schema.text, "AVRO")
    try:
        versions = client.get_versions(subject)
        if not versions:
            return "new", f"{head}: {_NEW}"
        if refusal.rule == "NONE":
            return "ok", f"{head}: any schema is accepted"
        if refusal.rule.endswith("_TRANSITIVE"):
            compatible = client.test_compatibility_all_versions(subject, candidate)
        else:
            compatible = client.test_compatibility(subject, candidate)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return "new", f"{head}: {_NEW}"
        if exc.http_status_code in (409, 422):
            return "refused", f"{head}: {exc.error_message}"
        raise ConfigError("KIT_SCHEMA_REGISTRY_URL", f"{formats.url}: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            "KIT_SCHEMA_REGISTRY_URL",
            f"schema registry {formats.url} unreachable ({type(exc).__name__}: {exc})",
        ) from None
    against = "every version" if refusal.rule.endswith("_TRANSITIVE") else "the latest version"
    if compatible:
        return "ok", f"{head}: compatible with {against} ({len(versions)} registered)"
    why = "; ".join(refusal.incompatibilities) or (
        f"the registry finds it incompatible with {against}; kit finds no incompatibility"
    )
    return "refused", f"{head}: {why}"
