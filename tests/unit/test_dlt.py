"""kit.dlt without a broker: dead letters read back, --where, the choice of what a redrive
sends where (and that a second run sends nothing), and what `kit dlt` prints."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError

from kit.codec import Codec
from kit.config import Settings, load_settings
from kit.dlt.letters import (
    REDRIVEN_FROM,
    DeadLetter,
    Where,
    choose,
    iso_time,
    parse_marker,
    parse_where,
)
from kit.dlt.redriving import deliver
from kit.dlt.report import (
    TopicCounts,
    counts_json,
    counts_table,
    decode_value,
    letter_json,
    letter_lines,
    redrive_lines,
)
from tests.fixtures.events import OrderLine, OrderPlaced

FAILED_AT = int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)


@dataclass
class Msg:
    """A record as confluent-kafka hands it out (the part DeadLetter.of reads)."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = b"k"
    _headers: list[tuple[str, bytes | None]] | None = field(default_factory=list)
    _ts: int = FAILED_AT

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts


def letter(
    offset: int,
    reason: str = "handler",
    *,
    source: str | None = "orders",
    source_partition: int = 0,
    source_offset: int | None = None,
    dlt_partition: int = 0,
    value: bytes | None = b"v",
    own: list[tuple[str, bytes | None]] | None = None,
    extra: list[tuple[str, bytes | None]] | None = None,
) -> DeadLetter:
    """A dead letter of orders.dlt as kit.dispatch writes it: own headers, then kit-dlt-*."""
    headers = list(own if own is not None else [("trace", b"t1")])
    headers += [
        ("kit-dlt-reason", reason.encode()),
        ("kit-dlt-exception-type", b"RuntimeError"),
        ("kit-dlt-exception-message", b"payment service\nsaid no"),
    ]
    if source is not None:
        headers.append(("kit-dlt-original-topic", source.encode()))
    headers += [
        ("kit-dlt-original-partition", str(source_partition).encode()),
        (
            "kit-dlt-original-offset",
            str(offset if source_offset is None else source_offset).encode(),
        ),
        ("kit-dlt-original-timestamp", str(FAILED_AT - 5000).encode()),
        ("kit-dlt-attempts", b"4"),
        ("kit-dlt-service", b"shop"),
        ("kit-dlt-group", b"shop-g"),
        ("kit-dlt-handler", b"on_order"),
        *(extra or []),
    ]
    return DeadLetter.of(Msg("orders.dlt", dlt_partition, offset, value, _headers=headers))


# --- dead letters read back ----------------------------------------------------------------


def test_a_dead_letter_reads_its_headers_back() -> None:
    x = letter(7, source_partition=2, dlt_partition=2)
    assert (x.reason, x.exception) == ("handler", "RuntimeError: payment service\nsaid no")
    assert (x.original_topic, x.original_partition, x.original_offset) == ("orders", 2, 7)
    assert x.original == "orders[2]@7"
    assert x.marker == "orders.dlt/2/7"
    assert x.record_id == "orders/2/7"
    assert x.truncated is None
    assert iso_time(x.timestamp_ms) == "2026-03-01T12:00:00.000+00:00"


def test_a_record_kit_did_not_dead_letter_is_its_own_record() -> None:
    x = DeadLetter.of(Msg("orders.dlt", 1, 4, b"junk", _headers=None))
    assert (x.reason, x.original, x.record_id) == ("none", "?[?]@?", "letter:orders.dlt/1/4")


def test_headers_given_as_a_dict_or_as_text_are_read_as_bytes() -> None:
    msg = Msg("orders.dlt", 0, 1, b"v", _headers={"kit-dlt-reason": "decode"})  # type: ignore[arg-type]
    assert DeadLetter.of(msg).headers == [("kit-dlt-reason", b"decode")]


def test_a_redrive_keeps_the_records_own_headers_and_names_its_letter() -> None:
    own = [("trace", b"t1"), ("trace", b"t2"), ("empty", None), (REDRIVEN_FROM, b"old.dlt/0/1")]
    x = letter(3, own=own, extra=[("kit-dlt-truncated", b"99")])
    assert x.original_headers() == [("trace", b"t1"), ("trace", b"t2"), ("empty", None)]
    assert x.redrive_headers()[-1] == (REDRIVEN_FROM, b"orders.dlt/0/3")
    assert [k for k, _ in x.redrive_headers()].count(REDRIVEN_FROM) == 1


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("orders.dlt/0/3", ("orders.dlt", 0, 3)),
        ("a.b-c_d.dlt/12/3456", ("a.b-c_d.dlt", 12, 3456)),
        ("orders.dlt/x/3", None),
        ("orders.dlt/3", None),
        ("/0/3", None),
        ("", None),
    ],
)
def test_markers_parse(text: str, parsed: tuple[str, int, int] | None) -> None:
    assert parse_marker(text) == parsed


# --- --where ----------------------------------------------------------------------------------


def test_where_parses_keys_and_several_values() -> None:
    where = parse_where(["reason=handler,decode", " Service = shop "])
    assert where.terms == (
        ("reason", frozenset({"handler", "decode"})),
        ("service", frozenset({"shop"})),
    )
    assert str(where) == "reason=decode,handler and service=shop"
    assert str(parse_where([])) == "all"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("reason", "expected KEY=VALUE"),
        ("reason=", "expected KEY=VALUE"),
        ("reason= , ", "expected KEY=VALUE"),
        ("colour=red", "use one of reason, exception, topic, service, group, handler"),
        ("reason=handlr", "unknown reason handlr: use decode, handler, delivery"),
    ],
)
def test_a_wrong_where_says_what_is_right(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_where([text])


def test_where_terms_all_hold() -> None:
    handler, decode = letter(1, "handler"), letter(2, "decode")
    assert Where().matches(handler)
    assert parse_where(["reason=handler"]).matches(handler)
    assert not parse_where(["reason=handler"]).matches(decode)
    assert parse_where(["reason=handler,decode"]).matches(decode)
    assert parse_where(["exception=RuntimeError", "topic=orders"]).matches(handler)
    assert not parse_where(["reason=handler", "handler=other"]).matches(handler)
    assert not parse_where(["reason=decode"]).matches(DeadLetter.of(Msg("x.dlt", 0, 0, b"")))


# --- choosing what to redrive -------------------------------------------------------------------

PARTITIONS = {"orders": 3, "orders.dlt": 3, "retry": 1}


def test_each_letter_goes_back_to_its_partition_of_its_topic() -> None:
    letters = [letter(0, source_partition=2), letter(1, source_partition=0)]
    plan = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    assert [(r.letter.offset, r.target, r.partition) for r in plan.chosen] == [
        (0, "orders", 2),
        (1, "orders", 0),
    ]
    assert plan.targets() == Counter({"orders": 2})
    assert (plan.skipped, plan.left_out) == ({}, 0)


def test_to_sends_elsewhere_by_key_and_a_partition_the_topic_lacks_goes_by_key() -> None:
    letters = [letter(0, source_partition=2), letter(1, source_partition=5)]
    to_retry = choose("orders.dlt", letters, Where(), "retry", PARTITIONS, set())
    assert [(r.target, r.partition) for r in to_retry.chosen] == [("retry", None), ("retry", None)]
    back = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    assert [(r.target, r.partition) for r in back.chosen] == [("orders", 2), ("orders", None)]


def test_where_leaves_letters_out() -> None:
    letters = [letter(0, "handler"), letter(1, "decode"), letter(2, "handler")]
    plan = choose("orders.dlt", letters, parse_where(["reason=handler"]), None, PARTITIONS, set())
    assert [r.letter.offset for r in plan.chosen] == [0, 2]
    assert plan.left_out == 1


def test_letters_that_cannot_go_back_are_left_with_why() -> None:
    letters = [
        letter(0, source=None),
        letter(1, source="gone"),
        letter(2, extra=[("kit-dlt-truncated", b"2000000")]),
        letter(3),
    ]
    plan = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    assert [r.letter.offset for r in plan.chosen] == [3]
    assert {why: [x.offset for x in xs] for why, xs in plan.skipped.items()} == {
        "no original topic": [0],
        "target topic missing": [1],
        "truncated": [2],
    }


def test_a_second_run_sends_nothing() -> None:
    letters = [
        letter(n, "handler" if n % 2 else "decode", source_partition=n % 3) for n in range(8)
    ]
    first = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    assert len(first.chosen) == 8
    found = {(r.target, r.letter.marker) for r in first.chosen}  # what the target now holds
    second = choose("orders.dlt", letters, Where(), None, PARTITIONS, found)
    assert second.chosen == []
    assert len(second.skipped["already redriven"]) == 8


def test_a_run_stopped_half_way_is_finished_by_the_next_once() -> None:
    letters = [letter(n) for n in range(6)]
    first = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    landed = {(r.target, r.letter.marker) for r in first.chosen[:4]}  # killed after 4
    second = choose("orders.dlt", letters, Where(), None, PARTITIONS, landed)
    assert [r.letter.offset for r in second.chosen] == [4, 5]


def test_a_marker_counts_only_in_the_topic_it_was_found_in() -> None:
    letters = [letter(0), letter(1)]
    sent_to_retry = {("retry", "orders.dlt/0/0"), ("retry", "orders.dlt/0/1")}
    back = choose("orders.dlt", letters, Where(), None, PARTITIONS, sent_to_retry)
    assert len(back.chosen) == 2
    again = choose("orders.dlt", letters, Where(), "retry", PARTITIONS, sent_to_retry)
    assert again.chosen == []


def test_a_record_dead_lettered_twice_is_redriven_once() -> None:
    twice = [letter(0, source_offset=40), letter(1, source_offset=40), letter(2, source_offset=41)]
    plan = choose("orders.dlt", twice, Where(), None, PARTITIONS, set())
    assert [r.letter.offset for r in plan.chosen] == [0, 2]
    assert [x.offset for x in plan.skipped["same record as another dead letter"]] == [1]
    found = {(r.target, r.letter.marker) for r in plan.chosen}
    again = choose("orders.dlt", twice, Where(), None, PARTITIONS, found)
    assert again.chosen == []


# --- what kit dlt prints ------------------------------------------------------------------------


def test_the_list_table_counts_by_reason() -> None:
    busy = TopicCounts("orders.dlt", 3)
    for x in (letter(0, "handler"), letter(1, "handler"), letter(2, "decode")):
        busy.add(x)
    empty = TopicCounts("billing.dlt", 1)
    assert counts_table([busy, empty]).splitlines() == [
        "TOPIC        RECORDS  DECODE  HANDLER  DELIVERY  NEWEST",
        "orders.dlt         3       1        2         0  2026-03-01T12:00:00.000+00:00",
        "billing.dlt        0       0        0         0  -",
    ]
    assert counts_table([]) == "no dead-letter topics"
    assert counts_json([busy])[0] == {
        "topic": "orders.dlt",
        "partitions": 3,
        "records": 3,
        "reasons": {"decode": 1, "handler": 2, "delivery": 0},
        "oldest": "2026-03-01T12:00:00.000+00:00",
        "newest": "2026-03-01T12:00:00.000+00:00",
    }


def test_the_list_table_has_an_other_column_only_when_needed() -> None:
    odd = TopicCounts("x.dlt", 1)
    odd.add(DeadLetter.of(Msg("x.dlt", 0, 0, b"")))
    assert counts_table([odd]).splitlines()[0].split() == [
        "TOPIC", "RECORDS", "DECODE", "HANDLER", "DELIVERY", "OTHER", "NEWEST"
    ]  # fmt: skip


def placed() -> OrderPlaced:
    return OrderPlaced(
        order_id="o-2",
        customer="c",
        lines=[OrderLine(sku="tea", quantity=1, unit_price_cents=250)],
        placed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_a_value_is_decoded_with_its_writer_schema() -> None:
    codec = Codec(OrderPlaced.__kit_repository__)
    value, error = decode_value(codec, letter(0, value=codec.encode(placed())))
    assert error is None
    assert value["order_id"] == "o-2"
    assert value["placed_at"] == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("value", "extra", "says"),
    [
        (b"\x07junk", [], "not Avro single-object encoding"),
        (
            b"\xc3\x01" + bytes(8) + b"\x02",
            [],
            "unknown writer schema (fingerprint 0000000000000000)",
        ),
        (None, [], "no value (a tombstone)"),
        (b"\xc3\x01abc", [("kit-dlt-truncated", b"900")], "cut to 5 of 900 bytes to fit the DLT"),
    ],
)
def test_a_value_that_does_not_decode_says_why(
    value: bytes | None, extra: list[tuple[str, bytes | None]], says: str
) -> None:
    codec = Codec(OrderPlaced.__kit_repository__)
    decoded, error = decode_value(codec, letter(0, "decode", value=value, extra=extra))
    assert decoded is None
    assert error is not None and error.startswith(says), error


def test_a_letter_as_lines_and_as_json() -> None:
    x = letter(7, source_partition=1, dlt_partition=1, extra=[(REDRIVEN_FROM, b"orders.dlt/1/2")])
    lines = letter_lines(x, {"order_id": "o-2"}, None)
    assert lines == [
        "orders.dlt[1]@7  failed 2026-03-01T12:00:00.000+00:00  handler: "
        "RuntimeError: payment service said no",
        '  original: orders[1]@7 of 2026-03-01T11:59:55.000+00:00, key "k"',
        "  by: service shop, group shop-g, handler on_order, 4 attempt(s)",
        "  redriven from: orders.dlt/1/2 (it failed again)",
        '  value: {"order_id": "o-2"}',
    ]
    doc = letter_json(x, {"order_id": "o-2"}, None)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["dlt"] == {"topic": "orders.dlt", "partition": 1, "offset": 7}
    assert doc["original"] == {
        "topic": "orders",
        "partition": 1,
        "offset": 7,
        "timestamp": "2026-03-01T11:59:55.000+00:00",
    }
    assert (doc["reason"], doc["exception_type"], doc["key"]) == ("handler", "RuntimeError", "k")
    assert doc["headers"] == {"trace": "t1"}
    assert doc["redriven_from"] == "orders.dlt/1/2"


def test_a_binary_key_and_an_undecoded_value() -> None:
    x = DeadLetter.of(Msg("orders.dlt", 0, 0, b"\x07junk", _key=b"\xff\x00"))
    assert letter_lines(x, None, "bad")[-1] == "  value: 5 bytes, not decoded: bad"
    assert "key base64:/wA=" in letter_lines(x, None, "bad")[1]
    assert letter_json(x, None, "bad")["key_base64"] == "/wA="


def test_a_redrive_summary() -> None:
    letters = [letter(0), letter(1, "decode"), letter(2, extra=[("kit-dlt-truncated", b"900")])]
    plan = choose("orders.dlt", letters, parse_where(["reason=handler"]), None, PARTITIONS, set())
    assert redrive_lines(plan, None) == [
        "kit dlt redrive: would redrive orders.dlt/0/0 (handler, orders[0]@0) to orders[0]",
        "kit dlt redrive: would redrive 1 record(s) from orders.dlt: 1 to orders",
        "kit dlt redrive: left alone: 1 truncated, 1 not matching reason=handler",
        "kit dlt redrive: orders.dlt/0/2 holds 1 of 900 bytes: redrive orders[0]@2 from its "
        "topic instead",
    ]
    assert redrive_lines(plan, Counter({"orders": 1}))[0] == (
        "kit dlt redrive: redrove 1 record(s) from orders.dlt: 1 to orders"
    )
    nothing = choose("orders.dlt", [], Where(), None, PARTITIONS, set())
    assert redrive_lines(nothing, Counter()) == [
        "kit dlt redrive: redrove 0 record(s) from orders.dlt"
    ]


# --- sending (the producer replaced) -----------------------------------------------------------


class FakeProducer:
    """Queues records; poll() and flush() report them delivered, except those at the
    indexes in `refuse` (refused by the broker) and, on flush, `hold` (never confirmed)."""

    def __init__(self, refuse: frozenset[int] = frozenset(), hold: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int, object]] = []
        self.queued: list[tuple[int, Any]] = []
        self.refuse, self.hold = refuse, hold

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, *, partition: int,
        on_delivery: Any, headers: object,
    ) -> None:  # fmt: skip
        self.queued.append((len(self.sent), on_delivery))
        self.sent.append((topic, value, key, partition, headers))

    def poll(self, _timeout: float) -> int:
        done, self.queued = self.queued, []
        for i, report in done:
            report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if i in self.refuse else None, None)
        return len(done)

    def flush(self, _timeout: float) -> int:
        held = self.queued[len(self.queued) - self.hold :] if self.hold else []
        self.queued = self.queued[: len(self.queued) - len(held)]
        self.poll(0)
        return len(held)


def sending(monkeypatch: pytest.MonkeyPatch, producer: FakeProducer) -> dict[str, Any]:
    made: dict[str, Any] = {}

    def make(settings: Settings, **kw: Any) -> FakeProducer:
        made.update(kw)
        return producer

    monkeypatch.setattr("kit.dlt.redriving.make_producer", make)
    return made


def test_deliver_sends_in_order_with_markers_and_room_for_the_largest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer()
    made = sending(monkeypatch, producer)
    letters = [letter(0, source_partition=2, value=b"x" * 5000), letter(1), letter(2)]
    plan = choose("orders.dlt", letters, Where(), None, PARTITIONS, set())
    result = deliver(load_settings(), plan)
    assert (result.ok, result.delivered) == (True, Counter({"orders": 3}))
    assert [(t, p) for t, _v, _k, p, _h in producer.sent] == [
        ("orders", 2),
        ("orders", 0),
        ("orders", 0),
    ]
    assert producer.sent[0][4] == [("trace", b"t1"), (REDRIVEN_FROM, b"orders.dlt/0/0")]
    assert made["message_max_bytes"] > 5000


def test_deliver_sends_nothing_more_after_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(refuse=frozenset({1}))
    sending(monkeypatch, producer)
    plan = choose("orders.dlt", [letter(n) for n in range(5)], Where(), None, PARTITIONS, set())
    result = deliver(load_settings(), plan)
    assert not result.ok
    assert result.delivered == Counter({"orders": 1})
    assert [(x.offset, why) for x, why in result.failed] == [(1, "Broker: Message size too large")]
    assert (len(producer.sent), result.unsent) == (2, 3)


def test_deliver_counts_what_was_not_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(hold=2)
    producer.poll = lambda _timeout: 0  # type: ignore[method-assign]  # nothing confirmed before flush
    sending(monkeypatch, producer)
    plan = choose("orders.dlt", [letter(n) for n in range(4)], Where(), None, PARTITIONS, set())
    result = deliver(load_settings(), plan)
    assert (result.ok, result.unconfirmed, result.unsent) == (False, 2, 0)
