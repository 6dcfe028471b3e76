"""Single-object encoding and Avro schema resolution between versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kit import Codec, DecodeError, Event, SchemaRepository
from tests.fixtures.events import OrderLine, OrderPlaced


def order() -> OrderPlaced:
    return OrderPlaced(
        order_id="o-1",
        customer="ada",
        lines=[OrderLine(sku="tea", quantity=2, unit_price_cents=350)],
        placed_at=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    )


def test_round_trip_and_single_object_header() -> None:
    codec = Codec(OrderPlaced.__kit_repository__)
    data = codec.encode(order())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == OrderPlaced.kit_schema().fingerprint
    assert codec.decode(data, OrderPlaced) == order()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected magic c3 01"),
        (b"random bytes here", "expected magic c3 01"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown writer schema"),
        (None, "tombstone"),
    ],
)
def test_bad_input_raises_decode_error(data: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Codec(OrderPlaced.__kit_repository__).decode(data, OrderPlaced)


def test_truncated_and_trailing_bytes_raise_decode_error() -> None:
    codec = Codec(OrderPlaced.__kit_repository__)
    data = codec.encode(order())
    with pytest.raises(DecodeError):
        codec.decode(data[:-4], OrderPlaced)
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00", OrderPlaced)


def versions(tmp_path: Path) -> tuple[SchemaRepository, SchemaRepository]:
    base = [{"name": "id", "type": "string"}, {"name": "legacy", "type": "int"}]
    v1 = {"type": "record", "name": "Thing", "namespace": "evo", "fields": base}
    v2 = {
        "type": "record",
        "name": "Thing",
        "namespace": "evo",
        "fields": [base[0], {"name": "color", "type": "string", "default": "red"}],
    }
    for name, schema in (("v1", v1), ("v2", v2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Thing.avsc").write_text(json.dumps(schema))
    return SchemaRepository(tmp_path / "v1"), SchemaRepository(tmp_path / "v2")


def test_schema_evolution_both_directions(tmp_path: Path) -> None:
    r1, r2 = versions(tmp_path)

    class ThingV1(Event, schema="evo.Thing", repository=r1):
        id: str
        legacy: int

    class ThingV2(Event, schema="evo.Thing", repository=r2):
        id: str
        color: str = "red"

    # Writers' schemas are known to readers through a resolver (the schema topic on Kafka).
    everything = {s.fingerprint: s for s in [*r1, *r2]}
    old = Codec(r1, resolver=everything.get)
    new = Codec(r2, resolver=everything.get)
    # old writer -> new reader: the added field takes its default, the removed one is dropped
    assert new.decode(old.encode(ThingV1(id="a", legacy=7)), ThingV2) == ThingV2(
        id="a", color="red"
    )
    # new writer -> old reader fails only if the old reader needs a field without default
    with pytest.raises(DecodeError, match="legacy"):
        old.decode(new.encode(ThingV2(id="b", color="blue")), ThingV1)
