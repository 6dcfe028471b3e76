"""``kit schemas check``: validate every ``.avsc`` file of a schema folder."""

from __future__ import annotations

import click

from kit.cli.errors import Exit, guarded

__all__ = ["schemas"]


@click.group("schemas", short_help="Schema tools: kit schemas check validates every .avsc file.")
def schemas() -> None:
    """Schema tools."""


@schemas.command("check")
@click.argument("folder", metavar="[DIR]", required=False, envvar="KIT_SCHEMAS_DIR")
@guarded("kit")
def check(folder: str | None) -> int:
    """Validate every .avsc file (DIR default: KIT_SCHEMAS_DIR or ./schemas).

    Exit 0 if all are valid, 1 if any has a problem (each is printed with its file).
    """
    from pathlib import Path

    from kit.schema import SchemaRepository

    root = Path(folder or "schemas")
    repo = SchemaRepository(root)
    for problem in repo.problems:
        print(f"error: {problem}")
    if repo.problems:
        print(f"{len(repo.problems)} problem(s) in {root}")
        return Exit.FAILED
    names = sorted(s.full_name for s in repo)
    for schema in sorted(repo, key=lambda s: s.full_name):
        print(f"ok  {schema.full_name:40} {schema.fingerprint.hex()}  {schema.source}")
    print(f"{len(names)} schema(s) in {root} are valid")
    return Exit.OK
