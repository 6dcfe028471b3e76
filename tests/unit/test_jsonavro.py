"""JSON input for `kit request`: converted by the schema, with the path of bad values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kit.errors import EncodeError
from kit.jsonavro import from_json, to_json
from tests.fixtures.events import OrderPlaced


def schema() -> dict:
    return OrderPlaced.kit_schema().parsed


def test_json_order_converts_to_avro_data_and_back() -> None:
    data = from_json(
        schema(),
        {
            "order_id": "o-1",
            "customer": "ada",
            "placed_at": "2026-01-02T03:04:05",
            "lines": [{"sku": "tea", "quantity": 2, "unit_price_cents": 350}],
        },
    )
    assert data["placed_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "note" not in data  # left to its default
    assert to_json(data)["placed_at"] == "2026-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"order_id": 1}, "$.order_id: expected string"),
        (
            {"order_id": "o", "customer": "c", "lines": [{"sku": "t"}], "placed_at": "2026-01-01"},
            "$.lines[0].quantity: missing required field",
        ),
        (
            {"order_id": "o", "customer": "c", "lines": [], "placed_at": "yesterday"},
            "$.placed_at: expected an ISO-8601 date-time",
        ),
        (  # a number where a date-time goes: an input error, not a TypeError traceback
            {"order_id": "o", "customer": "c", "lines": [], "placed_at": 0},
            "$.placed_at: expected an ISO-8601 date-time, got 0",
        ),
        ({"order_id": "o", "bogus": 1}, "unknown field(s) ['bogus']"),
    ],
)
def test_bad_json_names_the_path(payload: dict, message: str) -> None:
    with pytest.raises(EncodeError) as info:
        from_json(schema(), payload)
    assert message in str(info.value)
