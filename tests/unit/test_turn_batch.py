"""kit.protocol.TurnBatch: what is produced in one turn of the event loop goes to the sink
together, in order, at the end of that turn (request-reply's batching, docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from kit.errors import DeliveryError
from kit.protocol import TopicNotReady, TurnBatch


class Sink:
    """Records what it produces and confirms it; refuses the value `refuse`, as a producer
    whose queue stayed full does."""

    def __init__(self, refuse: str | None = None) -> None:
        self.produced: list[tuple[str, bytes | None]] = []
        self.refuse = refuse

    def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:
        if value is not None and value.decode() == self.refuse:
            raise DeliveryError("producer queue stayed full for 30s")
        self.produced.append((topic, value))
        on_delivery(None, value)

    async def prepare(self, topic: str) -> None:
        pass

    def record_limit(self, topic: str) -> int | None:
        return None


def test_records_of_one_turn_reach_the_sink_together_in_order_at_its_end() -> None:
    sink = Sink()
    batch = TurnBatch(sink)
    reports: list[Any] = []

    async def main() -> None:
        for n in range(3):
            batch.produce("replies", b"%d" % n, None, None, lambda e, m: reports.append((e, m)))
        assert sink.produced == []  # not yet: the turn has not ended
        await asyncio.sleep(0)  # the end of this turn
        assert sink.produced == [("replies", b"0"), ("replies", b"1"), ("replies", b"2")]
        batch.produce("replies", b"3", None, None, lambda e, m: reports.append((e, m)))
        await asyncio.sleep(0)
        assert sink.produced[-1] == ("replies", b"3")  # the next turn makes its own batch

    asyncio.run(main())
    assert reports == [(None, b"0"), (None, b"1"), (None, b"2"), (None, b"3")]


def test_a_refused_record_and_those_after_it_report_the_error_and_nothing_is_lost() -> None:
    sink = Sink(refuse="1")
    batch = TurnBatch(sink)
    reports: dict[bytes, Any] = {}

    async def main() -> None:
        for n in range(3):
            value = b"%d" % n
            batch.produce(
                "replies", value, None, None, lambda e, _m, v=value: reports.update({v: e})
            )
        await asyncio.sleep(0)

    asyncio.run(main())
    assert sink.produced == [("replies", b"0")]
    assert reports[b"0"] is None
    assert isinstance(reports[b"1"], DeliveryError) and reports[b"2"] is reports[b"1"]


def test_a_topic_the_sink_does_not_know_fails_that_record_only() -> None:
    class Picky(Sink):
        def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:
            if topic == "gone":
                raise TopicNotReady(topic)
            super().produce(topic, value, key, headers, on_delivery, partition)

    sink = Picky()
    batch = TurnBatch(sink)
    reports: list[tuple[bytes, Any]] = []

    async def main() -> None:
        for topic, value in (("replies", b"0"), ("gone", b"1"), ("replies", b"2")):
            batch.produce(topic, value, None, None, partial(_note, reports, value))
        batch.flush()  # now, not at the end of the turn
        assert sink.produced == [("replies", b"0"), ("replies", b"2")]

    asyncio.run(main())
    errors = dict(reports)
    assert errors[b"0"] is None and errors[b"2"] is None
    assert isinstance(errors[b"1"], TopicNotReady)


def _note(reports: list[tuple[bytes, Any]], value: bytes, err: Any, _msg: Any) -> None:
    reports.append((value, err))
