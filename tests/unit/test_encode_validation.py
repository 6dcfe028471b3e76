"""Encode checks (issue 11, point 8): int and long ranges, naive datetimes, with the JSON path."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kit import Codec, EncodeError, Event, SchemaRepository
from tests.fixtures.events import OrderLine, OrderPlaced
from tests.unit.schema_files import record, write

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def order(*quantities: int, placed_at: datetime = AT) -> OrderPlaced:
    lines = [OrderLine(sku="tea", quantity=q, unit_price_cents=350) for q in quantities]
    return OrderPlaced(order_id="o-1", customer="ada", lines=lines, placed_at=placed_at)


def codec() -> Codec:
    return Codec(OrderPlaced.__kit_repository__)


# --- int and long ranges on encode -------------------------------------------------------


@pytest.fixture(scope="module")
def numbers(tmp_path_factory: pytest.TempPathFactory) -> SchemaRepository:
    root = tmp_path_factory.mktemp("numbers")
    write(
        root,
        "Numbers",
        record(
            "Numbers",
            [
                {"name": "small", "type": "int"},
                {"name": "big", "type": "long"},
                {"name": "maybe", "type": ["null", "int"], "default": None},
                {"name": "counts", "type": {"type": "map", "values": "int"}},
                {
                    "name": "at",
                    "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
                },
            ],
        ),
    )
    return SchemaRepository(root)


@pytest.fixture(scope="module")
def numbers_event(numbers: SchemaRepository) -> type[Event]:
    class Numbers(Event, schema="v.Numbers", repository=numbers):
        small: int
        big: int
        maybe: int | None = None
        counts: dict[str, int] = {}
        at: datetime | None = None

    return Numbers


@pytest.mark.parametrize(("small", "big"), [(INT_MIN, LONG_MIN), (INT_MAX, LONG_MAX), (0, 0)])
def test_values_at_the_limits_encode(numbers_event: type[Event], small: int, big: int) -> None:
    event = numbers_event(small=small, big=big, maybe=small, counts={"k": small})
    c = Codec(numbers_event.__kit_repository__)
    assert c.decode(c.encode(event), numbers_event) == event


@pytest.mark.parametrize(
    ("values", "path", "kind"),
    [
        ({"small": 2**40}, "$.small", "int"),
        ({"small": INT_MAX + 1}, "$.small", "int"),
        ({"small": INT_MIN - 1}, "$.small", "int"),
        ({"big": LONG_MAX + 1}, "$.big", "long"),
        ({"big": LONG_MIN - 1}, "$.big", "long"),
        ({"maybe": 2**40}, "$.maybe", "int"),
        ({"counts": {"ok": 1, "bad": 2**40}}, "$.counts.bad", "int"),
    ],
)
def test_out_of_range_numbers_raise_encode_error_naming_the_path(
    numbers_event: type[Event], values: dict[str, object], path: str, kind: str
) -> None:
    event = numbers_event(**{"small": 1, "big": 1, **values})
    with pytest.raises(EncodeError) as info:
        Codec(numbers_event.__kit_repository__).encode(event)
    message = str(info.value)
    assert f"{path}: " in message
    assert f"out of range for Avro {kind}" in message


def test_out_of_range_int_in_a_nested_record_names_the_index() -> None:
    with pytest.raises(EncodeError, match=r"\$\.lines\[1\]\.quantity: 1099511627776 is out of"):
        codec().encode(order(1, 2**40))


def test_out_of_range_after_model_copy_is_caught_on_encode() -> None:
    line = OrderLine(sku="tea", quantity=1, unit_price_cents=350)
    event = order(1).model_copy(update={"lines": [line.model_copy(update={"quantity": 2**40})]})
    with pytest.raises(EncodeError, match=r"\$\.lines\[0\]\.quantity"):
        codec().encode(event)


def test_encode_datum_checks_ranges_too() -> None:
    repo = OrderPlaced.__kit_repository__
    assert repo is not None
    schema = repo.get("shop.OrderLine")
    with pytest.raises(EncodeError, match=r"\$\.quantity: .*out of range for Avro int"):
        codec().encode_datum(schema, {"sku": "t", "quantity": 2**40, "unit_price_cents": 1})


# --- naive datetimes ----------------------------------------------------------------------


def test_naive_datetime_is_rejected_naming_the_field() -> None:
    with pytest.raises(EncodeError) as info:
        codec().encode(order(1, placed_at=datetime(2026, 1, 2, 3, 4, 5)))
    message = str(info.value)
    assert "$.placed_at: " in message and "naive datetime" in message


def test_naive_datetime_in_a_nullable_field_is_rejected(numbers_event: type[Event]) -> None:
    event = numbers_event(small=1, big=1, at=datetime(2026, 1, 2))
    with pytest.raises(EncodeError, match=r"\$\.at: naive datetime"):
        Codec(numbers_event.__kit_repository__).encode(event)


def test_aware_datetime_in_any_zone_encodes() -> None:
    from datetime import timedelta, timezone

    local = AT.astimezone(timezone(timedelta(hours=5)))
    data = codec().encode(order(1, placed_at=local))
    assert codec().decode(data, OrderPlaced).placed_at == AT


def test_a_wrong_type_is_named_with_its_path_too(numbers_event: type[Event]) -> None:
    event = numbers_event.model_construct(small="7", big=1, maybe=None, counts={}, at=None)
    with pytest.raises(EncodeError, match=r"\$\.small: expected Avro int, got '7'"):
        Codec(numbers_event.__kit_repository__).encode(event)
