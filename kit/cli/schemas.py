"""``kit schemas check``: validate the ``.avsc`` files of a schema folder, or one file."""

from __future__ import annotations

from pathlib import Path

import click

from kit.cli.errors import Exit, guarded

__all__ = ["schemas"]


@click.group("schemas", short_help="Schema tools: kit schemas check validates .avsc files.")
def schemas() -> None:
    """Schema tools."""


@schemas.command("check")
@click.argument("target", metavar="[PATH]", required=False, envvar="KIT_SCHEMAS_DIR")
@guarded("kit")
def check(target: str | None) -> int:
    """Validate every .avsc file of a folder, or one .avsc file.

    PATH defaults to KIT_SCHEMAS_DIR, else the nearest schemas/ folder in or above the
    current directory (as services find theirs). A file or subfolder inside a schemas/
    folder is checked together with the whole folder, where the types it references are,
    and only its own problems and types are shown.

    Exit 0 if all are valid, 1 if any has a problem (each is printed with its file and
    JSON path).
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
