"""A named type used twice in one schema: parse once, same fingerprint, resolution works.

Issue 8, defect 4: `Schema.from_json` raised "redefined named type" on the very text kit
publishes to `_kit_schemas` when one record type is referenced twice, so readers on another
version could not resolve that writer schema.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import avro.schema
import pytest
from pydantic import BaseModel

from kit import Codec, Event, SchemaRepository
from kit.config import load_settings
from kit.schema import Schema
from kit.transport.registry_format import RegistryFormat, forget_client

ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "twice",
    "fields": [{"name": "street", "type": "string"}, {"name": "city", "type": "string"}],
}
KIND = {"type": "enum", "name": "Kind", "namespace": "twice", "symbols": ["HOME", "WORK"]}


def customer(extra: list[dict[str, object]] | None = None) -> dict[str, object]:
    """twice.Customer: Address used four times, Kind twice, one nested record used twice."""
    return {
        "type": "record",
        "name": "Customer",
        "namespace": "twice",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "address", "type": "twice.Address"},
            {"name": "billing_address", "type": "Address"},
            {"name": "previous", "type": {"type": "array", "items": "twice.Address"}},
            {"name": "by_label", "type": {"type": "map", "values": "Address"}},
            {"name": "kind", "type": "Kind"},
            {"name": "other_kind", "type": ["null", "twice.Kind"], "default": None},
            {
                "name": "phone",
                "type": {
                    "type": "record",
                    "name": "Phone",
                    "fields": [{"name": "number", "type": "string"}],
                },
            },
            {"name": "fax", "type": ["null", "Phone"], "default": None},
            *(extra or []),
        ],
    }


def folder(root: Path, name: str, extra: list[dict[str, object]] | None = None) -> Path:
    path = root / name / "twice"
    path.mkdir(parents=True)
    (path / "Address.avsc").write_text(json.dumps(ADDRESS))
    (path / "Kind.avsc").write_text(json.dumps(KIND))
    (path / "Customer.avsc").write_text(json.dumps(customer(extra)))
    return root / name


@pytest.fixture
def versions(tmp_path: Path) -> tuple[SchemaRepository, SchemaRepository]:
    v1 = SchemaRepository(folder(tmp_path, "v1"))
    email = {"name": "email", "type": ["null", "string"], "default": None}
    v2 = SchemaRepository(folder(tmp_path, "v2", [email]))
    v1.raise_problems()
    v2.raise_problems()
    return v1, v2


def test_published_text_parses_back_with_the_same_fingerprint(
    versions: tuple[SchemaRepository, SchemaRepository],
) -> None:
    for repo in versions:
        loaded = repo.get("twice.Customer")
        # what SchemaTopic.publish writes, and what a reader reads back
        read_back = Schema.from_json(loaded.text, source="_kit_schemas")
        assert read_back.full_name == "twice.Customer"
        assert read_back.fingerprint == loaded.fingerprint
        assert read_back.canonical == loaded.canonical
        assert read_back.text == loaded.text
        # from the plain-data definition too, and parsing the read-back text again is stable
        assert Schema.from_json(loaded.definition).fingerprint == loaded.fingerprint
        assert Schema.from_json(read_back.text).fingerprint == loaded.fingerprint


def test_fingerprint_matches_the_avro_reference_implementation(
    versions: tuple[SchemaRepository, SchemaRepository],
) -> None:
    for repo in versions:
        loaded = repo.get("twice.Customer")
        reference = avro.schema.parse(loaded.text)
        assert loaded.canonical == reference.canonical_form
        assert loaded.fingerprint == reference.fingerprint("CRC-64-AVRO")
        # the Address definition appears once; later uses are by name
        assert loaded.canonical.count('"name":"twice.Address"') == 1


def test_the_raw_file_text_parses_like_the_folder(tmp_path: Path) -> None:
    # A self-contained definition (Address inlined at its first use only), as a Java
    # producer or another kit would publish it.
    raw = customer()
    fields = raw["fields"]
    assert isinstance(fields, list)
    fields[1] = {"name": "address", "type": ADDRESS}
    fields[5] = {"name": "kind", "type": KIND}
    # Kind is first used at fields[5], Address at fields[1]; both are by name afterwards
    repo = SchemaRepository(folder(tmp_path, "v1"))
    from_text = Schema.from_json(json.dumps(raw))
    assert from_text.fingerprint == repo.get("twice.Customer").fingerprint


def test_resolution_across_versions_with_a_type_used_twice(
    versions: tuple[SchemaRepository, SchemaRepository],
) -> None:
    v1, v2 = versions
    record = {
        "id": "c-1",
        "address": {"street": "1 Main St", "city": "Springfield"},
        "billing_address": {"street": "PO Box 7", "city": "Shelbyville"},
        "previous": [{"street": "old", "city": "Ogdenville"}],
        "by_label": {"summer": {"street": "Lake Rd", "city": "North Haverbrook"}},
        "kind": "HOME",
        "other_kind": "WORK",
        "phone": {"number": "555-0100"},
        "fax": {"number": "555-0101"},
    }
    # Writer schemas travel as text on the schema topic: the reader only has what it parsed.
    topic = {s.fingerprint: Schema.from_json(s.text) for s in [*v1, *v2]}
    old = Codec(v1, resolver=topic.get)
    new = Codec(v2, resolver=topic.get)
    customer_v1, customer_v2 = v1.get("twice.Customer"), v2.get("twice.Customer")
    assert customer_v1.fingerprint != customer_v2.fingerprint

    data = old.encode_datum(customer_v1, record)
    # old writer -> new reader: the added field takes its default
    assert new.decode_dict(data, customer_v2) == {**record, "email": None}
    # new writer -> old reader: the added field is dropped
    newer = new.encode_datum(customer_v2, {**record, "email": "a@b.c"})
    assert old.decode_dict(newer, customer_v1) == record
    # and with the writer schema's own shape
    assert new.decode_any(data) == record


def test_events_bind_and_round_trip_with_a_type_used_twice(
    versions: tuple[SchemaRepository, SchemaRepository],
) -> None:
    v1, v2 = versions

    class Kind(StrEnum):
        HOME = "HOME"
        WORK = "WORK"

    class Address(BaseModel):
        street: str
        city: str

    class Phone(BaseModel):
        number: str

    class CustomerV2(Event, schema="twice.Customer", repository=v2):
        id: str
        address: Address
        billing_address: Address
        previous: list[Address]
        by_label: dict[str, Address]
        kind: Kind
        other_kind: Kind | None = None
        phone: Phone
        fax: Phone | None = None
        email: str | None = None

    topic = {s.fingerprint: Schema.from_json(s.text) for s in [*v1, *v2]}
    writer = Codec(v1, resolver=topic.get)
    reader = Codec(v2, resolver=topic.get)
    data = writer.encode_datum(
        v1.get("twice.Customer"),
        {
            "id": "c-2",
            "address": {"street": "a", "city": "b"},
            "billing_address": {"street": "c", "city": "d"},
            "previous": [],
            "by_label": {},
            "kind": "WORK",
            "other_kind": None,
            "phone": {"number": "1"},
            "fax": None,
        },
    )
    got = reader.decode(data, CustomerV2)
    assert got.billing_address == Address(street="c", city="d")
    assert got.email is None and got.kind is Kind.WORK


def test_a_type_used_twice_round_trips_through_a_schema_registry(
    versions: tuple[SchemaRepository, SchemaRepository],
) -> None:
    """The registry format (mock://): the registered text parses back, and resolves."""
    v1, v2 = versions
    customer_v1, customer_v2 = v1.get("twice.Customer"), v2.get("twice.Customer")
    url = "mock://named-twice"
    settings = load_settings({}, schema_registry_url=url)
    try:
        writer_format, reader_format = RegistryFormat(settings), RegistryFormat(settings)
        headers = {customer_v1.fingerprint: writer_format.register(customer_v1, "customers")}
        writer = Codec(v1, headers=headers)
        reader = Codec(v2, resolver=reader_format.lookup, registry=True)
        record = {
            "id": "c-3",
            "address": {"street": "a", "city": "b"},
            "billing_address": {"street": "c", "city": "d"},
            "previous": [{"street": "e", "city": "f"}],
            "by_label": {"x": {"street": "g", "city": "h"}},
            "kind": "HOME",
            "other_kind": "WORK",
            "phone": {"number": "1"},
            "fax": None,
        }
        data = writer.encode_datum(customer_v1, record)
        assert data[:5] == headers[customer_v1.fingerprint]
        assert reader.decode_dict(data, customer_v2) == {**record, "email": None}
        found = reader_format.lookup(data[:5])
        assert found is not None and found.fingerprint == customer_v1.fingerprint
    finally:
        forget_client(url)
