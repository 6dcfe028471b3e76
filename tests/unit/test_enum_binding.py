"""A model enum must have every symbol of its schema enum (issue 11)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import pytest

from kit import Event, SchemaError, SchemaRepository

PAINT = {
    "type": "record",
    "name": "Paint",
    "namespace": "v",
    "fields": [{"name": "color", "type": "v.Color"}],
}


class Color(StrEnum):
    RED = "RED"


def repository(root: Path, *symbols: str) -> SchemaRepository:
    color = {"type": "enum", "name": "Color", "namespace": "v", "symbols": list(symbols)}
    for name, schema in (("Paint", PAINT), ("Color", color)):
        (root / f"{name}.avsc").write_text(json.dumps(schema))
    return SchemaRepository(root)


def test_model_enum_with_fewer_symbols_than_the_schema_is_rejected(tmp_path: Path) -> None:
    repo = repository(tmp_path, "RED", "GREEN", "BLUE")
    with pytest.raises(SchemaError) as info:
        type(
            "Paint",
            (Event,),
            {"__annotations__": {"color": Color}},
            schema="v.Paint",
            repository=repo,
        )
    assert "field 'color': enum Color lacks symbols of schema enum v.Color: 'GREEN', 'BLUE'" in str(
        info.value
    )


def test_a_model_enum_with_every_symbol_binds(tmp_path: Path) -> None:
    class Paint(Event, schema="v.Paint", repository=repository(tmp_path, "RED")):
        color: Color

    assert Paint(color=Color.RED).color == "RED"
