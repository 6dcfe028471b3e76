"""`kit schemas check FILE` or SUBFOLDER, and `kit schemas check` run from inside a project."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.cli import main as kit_main
from tests.unit.schema_files import record, write


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KIT_SCHEMAS_DIR", raising=False)
    schemas = tmp_path / "proj" / "schemas"
    write(schemas, "v/Kind", {"type": "enum", "name": "Kind", "namespace": "v", "symbols": ["A"]})
    write(schemas, "v/Uses", record("Uses", [{"name": "kind", "type": "v.Kind"}]))
    write(schemas, "w/Other", record("Other", [{"name": "kind", "type": "v.Kind"}], "w"))
    (tmp_path / "proj" / "app" / "deep").mkdir(parents=True)
    return tmp_path / "proj"


def test_check_one_file_resolves_references_in_its_schemas_folder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Uses.avsc")]) == 0
    out = capsys.readouterr().out
    assert "v.Uses" in out and "v.Kind" not in out


def test_check_one_file_reports_only_its_problems(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        project / "schemas",
        "v/Bad",
        record("Bad", [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]),
    )
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Uses.avsc")]) == 0
    capsys.readouterr()
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Bad.avsc")]) == 1
    assert "Bad.avsc: $.fields[1].name: duplicate field name 'a'" in capsys.readouterr().out


def test_check_a_file_outside_any_schemas_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "loose", "One", record("One", [{"name": "a", "type": "int"}]))
    assert kit_main(["schemas", "check", str(path)]) == 0
    assert "v.One" in capsys.readouterr().out


def test_check_from_a_subfolder_finds_the_nearest_schemas(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project / "app" / "deep")
    assert kit_main(["schemas", "check"]) == 0
    out = capsys.readouterr().out
    assert "v.Uses" in out and "v.Kind" in out
    assert str(project / "schemas") in out


def test_check_a_subfolder_of_a_schemas_folder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_main(["schemas", "check", str(project / "schemas" / "w")]) == 0
    out = capsys.readouterr().out
    assert "w.Other" in out and "v.Kind" not in out and "1 schema(s)" in out
