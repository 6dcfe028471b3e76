"""Schema file checks (issue 11): duplicate fields, union defaults, the real JSON path."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit import SchemaRepository
from kit.cli import main as kit_main
from tests.unit.schema_files import record, write

# --- kit schemas check: duplicate fields, union defaults, JSON paths ----------------------


def problems(root: Path) -> list[tuple[str, str]]:
    return [(Path(p.file).name, f"{p.path}: {p.message}") for p in SchemaRepository(root).problems]


def test_duplicate_field_names_are_reported_with_their_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        "Dup",
        record("Dup", [{"name": "a", "type": "int"}, {"name": "a", "type": "string"}]),
    )
    inner = record("In", [{"name": "q", "type": "int"}, {"name": "q", "type": "long"}])
    write(
        tmp_path,
        "Deep",
        record("Deep", [{"name": "xs", "type": {"type": "array", "items": inner}}]),
    )
    found = dict((p[1].split(":")[0], p) for p in problems(tmp_path))
    assert (
        "$.fields[1].name" in found and "duplicate field name 'a'" in found["$.fields[1].name"][1]
    )
    assert "$.fields[0].type.items.fields[1].name" in found


def test_union_default_must_match_the_first_branch(tmp_path: Path) -> None:
    write(
        tmp_path,
        "U",
        record(
            "U",
            [
                {"name": "ok", "type": ["null", "string"], "default": None},
                {"name": "bad", "type": ["null", "string"], "default": "x"},
                {"name": "bad2", "type": ["string", "null"], "default": None},
            ],
        ),
    )
    found = [p[1] for p in problems(tmp_path)]
    assert any(p.startswith("$.fields[1].default: ") and "first branch" in p for p in found), found
    assert any(p.startswith("$.fields[2].default: ") for p in found), found
    assert not any(p.startswith("$.fields[0]") for p in found), found


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ([{"name": "a", "type": "int"}, {"name": "b", "type": "strng"}], "$.fields[1].type"),
        (
            [
                {
                    "name": "xs",
                    "type": {
                        "type": "array",
                        "items": record("L", [{"name": "sku", "type": "strin"}]),
                    },
                }
            ],
            "$.fields[0].type.items.fields[0].type",
        ),
        ([{"name": "a", "type": "int"}, {"type": "int"}], "$.fields[1]"),
        ([{"name": "a", "type": "int", "default": "x"}], "$.fields[0].default"),
        (
            [
                {"name": "a", "type": "int"},
                {"name": "k", "type": {"type": "enum", "name": "K", "symbols": ["A", "A"]}},
            ],
            "$.fields[1].type.symbols",
        ),
    ],
)
def test_parse_errors_name_the_real_json_path(
    tmp_path: Path, fields: list[dict[str, object]], path: str
) -> None:
    write(tmp_path, "P", record("P", fields))
    found = problems(tmp_path)
    assert [p for p in found if p[1].startswith(f"{path}: ")], found


def test_kit_schemas_check_reports_duplicates_and_union_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path, "Dup", record("Dup", [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}])
    )
    write(tmp_path, "U", record("U", [{"name": "b", "type": ["null", "string"], "default": "x"}]))
    assert kit_main(["schemas", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Dup.avsc: $.fields[1].name: duplicate field name 'a'" in out
    assert "U.avsc: $.fields[0].default:" in out
