"""The Kafka requester's reply path without a broker: batched delivery, marks, late replies,
failed sends and deadlines, on the fast path that skips per-call set-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kit.config import load_settings
from kit.errors import DeliveryError, RequestTimeout
from kit.protocol import CORRELATION_ID, DEADLINE, MARKER, METHOD, REPLY_TO
from kit.transport.requester import Requester


class Record:
    """A fetched reply, shaped like confluent_kafka.Message."""

    def __init__(self, headers: list[tuple[str, bytes]], value: bytes = b"r") -> None:
        self._headers = headers
        self._value = value

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def value(self) -> bytes:
        return self._value


class Producer:
    """Records what would be sent; `fail` reports each send as failed, as librdkafka would."""

    def __init__(self, fail: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.fail = fail
        self.reports: list[Any] = []

    def produce(self, topic: str, value: bytes, key: Any = None, **kw: Any) -> None:
        self.sent.append((topic, value, kw.get("headers") or []))
        if kw.get("on_delivery") is not None:
            self.reports.append(kw["on_delivery"])

    def poll(self, _timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report(self.fail, None)
        return len(reports)


def requester(producer: Producer) -> Requester:
    """A Requester that behaves as started (no reader thread, no broker)."""
    settings = load_settings({}, bootstrap_servers="127.0.0.1:1", request_timeout=5.0)
    req = Requester(settings, codec=None, producer=producer)  # type: ignore[arg-type]
    req._loop = asyncio.get_running_loop()
    req._thread = object()  # type: ignore[assignment]  # "started": no reply topic needed
    req._sink.known_topics.add("stock.check")
    return req


async def answer(req: Requester, producer: Producer, *extra: Record) -> None:
    """Wait until a request was sent, then deliver `extra` records and its reply together."""
    while not producer.sent:
        await asyncio.sleep(0)
    _topic, _value, headers = producer.sent[-1]
    corr = dict(headers)[CORRELATION_ID]
    req._deliver([*extra, Record([(CORRELATION_ID, corr)], b"reply")])  # type: ignore[list-item]


def test_a_batch_resolves_its_call_and_skips_marks_and_unknown_replies() -> None:
    async def scenario() -> None:
        producer = Producer()
        req = requester(producer)
        call = asyncio.ensure_future(req.request_raw("stock", "check", b"q"))
        mark = Record([(MARKER, b"1")])
        stranger = Record([(CORRELATION_ID, b"nobody")])
        await answer(req, producer, mark, stranger)
        reply = await asyncio.wait_for(call, 5)
        assert reply.value() == b"reply"
        assert req.late_replies == 1  # the stranger; the mark is not a reply
        assert req.pending == {}
        headers = dict(producer.sent[0][2])
        assert headers[REPLY_TO] == req.reply_topic.encode()
        assert headers[METHOD] == b"stock.check" and int(headers[DEADLINE]) > 0

    asyncio.run(scenario())


def test_a_failed_send_fails_the_call_with_delivery_error() -> None:
    async def scenario() -> None:
        producer = Producer(fail="broker said no")
        req = requester(producer)
        call = asyncio.ensure_future(req.request_raw("stock", "check", b"q"))
        while not producer.sent:
            await asyncio.sleep(0)
        producer.poll()  # the delivery report, as the poll thread would serve it
        with pytest.raises(DeliveryError, match="broker said no"):
            await asyncio.wait_for(call, 5)
        assert req.pending == {}

    asyncio.run(scenario())


def test_no_reply_before_the_deadline_is_a_request_timeout() -> None:
    async def scenario() -> None:
        producer = Producer()
        req = requester(producer)
        with pytest.raises(RequestTimeout) as caught:
            await req.request_raw("stock", "check", b"q", timeout=0.05)
        assert caught.value.args  # names the call
        assert req.pending == {}
        assert req.stats.call("stock", "check").timeouts == 1
        assert req.stats.call("stock", "check").in_flight == 0
        # a reply after the deadline is a late reply, not an error
        corr = dict(producer.sent[0][2])[CORRELATION_ID]
        req._deliver([Record([(CORRELATION_ID, corr)])])  # type: ignore[list-item]
        assert req.late_replies == 1

    asyncio.run(scenario())


def test_a_cancelled_call_leaves_nothing_pending() -> None:
    async def scenario() -> None:
        producer = Producer()
        req = requester(producer)
        call = asyncio.ensure_future(req.request_raw("stock", "check", b"q"))
        while not producer.sent:
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert req.pending == {}
        assert req.stats.call("stock", "check").in_flight == 0

    asyncio.run(scenario())
