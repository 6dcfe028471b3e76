"""The benchmark event `bench.Reading` as a kit Event, and the input records built from it."""

from __future__ import annotations

from kit import Codec, Event


class Reading(Event, schema="bench.Reading"):
    """A sensor reading of about 100 bytes on the wire (schemas/bench/Reading.avsc)."""

    id: int
    sensor: str
    site: str
    value: float
    unit: str
    taken_at: int
    ok: bool


def reading(n: int) -> Reading:
    """The n-th input event; 1,000 sensors spread over 6 partitions by key."""
    return Reading(
        id=n,
        sensor=f"urn:sensor:greenhouse-{n % 40:02d}:probe-{n % 1000:04d}",
        site="amsterdam-west/hall-3/row-12",
        value=18.0 + (n % 97) / 10,
        unit="celsius",
        taken_at=1_767_225_600_000 + n * 250,
        ok=n % 11 != 0,
    )


def records(count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: the value is kit's single-object encoding of `reading(n)`."""
    codec = Codec()
    return [(f"probe-{n % 1000:04d}".encode(), codec.encode(reading(n))) for n in range(count)]
