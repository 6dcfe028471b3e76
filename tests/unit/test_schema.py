"""Schema loading, cross references, and the model-vs-schema check."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel

from kit import Event, SchemaError, SchemaRepository
from kit.cli import main as kit_main
from tests.fixtures import SCHEMAS


def write(root: Path, name: str, schema: dict) -> Path:
    path = root / f"{name}.avsc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> SchemaRepository:
    write(
        tmp_path,
        "t/Kind",
        {"type": "enum", "name": "Kind", "namespace": "t", "symbols": ["A", "B"]},
    )
    write(
        tmp_path,
        "t/Inner",
        {
            "type": "record",
            "name": "Inner",
            "namespace": "t",
            "fields": [{"name": "x", "type": "int"}],
        },
    )
    write(
        tmp_path,
        "t/Outer",
        {
            "type": "record",
            "name": "Outer",
            "namespace": "t",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "inner", "type": "t.Inner"},
                {"name": "kind", "type": "t.Kind"},
                {"name": "tags", "type": {"type": "map", "values": "long"}},
                {"name": "items", "type": {"type": "array", "items": "t.Inner"}},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "maybe", "type": ["null", "string"], "default": None},
            ],
        },
    )
    return SchemaRepository(tmp_path)


class Kind(StrEnum):
    A = "A"
    B = "B"


class Inner(BaseModel):
    x: int


def test_cross_references_resolve_in_any_file_order(repo: SchemaRepository) -> None:
    assert repo.problems == []
    assert {s.full_name for s in repo} == {"t.Kind", "t.Inner", "t.Outer"}
    outer = repo.get("t.Outer")
    assert '"t.Inner"' in outer.canonical  # the reference is expanded into the definition
    assert len(outer.fingerprint) == 8
    assert repo.by_fingerprint(outer.fingerprint) is outer


def test_matching_model_binds(repo: SchemaRepository) -> None:
    class Outer(Event, schema="t.Outer", repository=repo):
        id: str
        inner: Inner
        kind: Kind
        tags: dict[str, int]
        items: list[Inner]
        at: datetime
        maybe: str | None = None

    assert Outer.kit_schema().full_name == "t.Outer"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("missing", "field 'maybe': in the schema but missing from the model"),
        ("wrong_type", "field 'id': schema type string but model type int"),
        (
            "optional_not_nullable",
            "field 'at': schema type long (timestamp-millis) is not nullable",
        ),
        ("not_optional", "field 'maybe': schema is nullable"),
        ("extra", "field 'extra': in the model but not in the schema"),
        ("nested", "field 'inner.x': schema type int but model type str"),
    ],
)
def test_mismatch_names_schema_field_and_problem(
    repo: SchemaRepository, fields: str, expected: str
) -> None:
    class BadInner(BaseModel):
        x: str

    annotations: dict[str, object] = {
        "id": str,
        "inner": Inner,
        "kind": Kind,
        "tags": dict[str, int],
        "items": list[Inner],
        "at": datetime,
        "maybe": str | None,
    }
    if fields == "missing":
        del annotations["maybe"]
    elif fields == "wrong_type":
        annotations["id"] = int
    elif fields == "optional_not_nullable":
        annotations["at"] = datetime | None
    elif fields == "not_optional":
        annotations["maybe"] = str
    elif fields == "extra":
        annotations["extra"] = int
    elif fields == "nested":
        annotations["inner"] = BadInner
    with pytest.raises(SchemaError) as info:
        type("Outer", (Event,), {"__annotations__": annotations}, schema="t.Outer", repository=repo)
    message = str(info.value)
    assert "t.Outer" in message
    assert expected in message


def test_unknown_schema_name_is_an_error(repo: SchemaRepository) -> None:
    with pytest.raises(SchemaError, match=r"no schema named 't\.Nope'"):
        type("X", (Event,), {"__annotations__": {"id": str}}, schema="t.Nope", repository=repo)


def test_broken_files_are_reported_with_file_and_path(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text("{not json")
    write(
        tmp_path,
        "dangling",
        {"type": "record", "name": "D", "fields": [{"name": "a", "type": "x.Missing"}]},
    )
    write(
        tmp_path,
        "badtype",
        {"type": "record", "name": "B", "fields": [{"name": "a", "type": "strng"}]},
    )
    repo = SchemaRepository(tmp_path)
    text = "\n".join(map(str, repo.problems))
    assert "bad.avsc: $: not valid JSON" in text
    assert "dangling.avsc" in text and "x.Missing" in text
    assert "badtype.avsc" in text
    with pytest.raises(SchemaError):
        repo.raise_problems()


def test_kit_schemas_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "ok", {"type": "record", "name": "Ok", "namespace": "n", "fields": []})
    assert kit_main(["schemas", "check", str(tmp_path)]) == 0
    assert "n.Ok" in capsys.readouterr().out
    (tmp_path / "broken.avsc").write_text('{"type": "record"}')
    assert kit_main(["schemas", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "broken.avsc" in out and "error:" in out


def test_repository_schemas_all_valid() -> None:
    repo = SchemaRepository(Path(__file__).parents[2] / "schemas")
    assert repo.problems == []
    assert "orders.OrderPlaced" in repo


def test_fixture_schemas_all_valid() -> None:
    repo = SchemaRepository(SCHEMAS)
    assert repo.problems == []
    assert "shop.OrderPlaced" in repo and "inventory.CheckStock" in repo
