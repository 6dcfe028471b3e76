"""A reply refused for good becomes an error reply, so its caller fails at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from kit.config import load_settings
from kit.context import Ticket
from kit.protocol import CORRELATION_ID, ERROR_MESSAGE, ERROR_TYPE, REPLY_TO, Headers
from kit.replying import Replies
from kit.transport.memory import MemoryMessage
from kit.transport.sink import refused_for_good

OnDelivery = Callable[[Any, Any], None]


def _record(
    topic: str, value: bytes | None, headers: tuple[tuple[str, bytes], ...] = ()
) -> MemoryMessage:
    """A record, or the message of a delivery report (confluent_kafka.Message's methods)."""
    return MemoryMessage(topic, 0, 7, None, value, headers, 1)


REQUEST = _record(
    "stock.check", b"request", ((REPLY_TO, b"caller.replies"), (CORRELATION_ID, b"c-1"))
)


class Sink:
    """Keeps what is produced and the delivery callbacks, to report on them later."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, dict[str, bytes]]] = []
        self.reports: list[OnDelivery] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: OnDelivery,
        partition: int | None = None,
    ) -> None:
        self.produced.append((topic, value, {k: v for k, v in headers or [] if v is not None}))
        self.reports.append(on_delivery)

    async def prepare(self, topic: str) -> None:
        pass

    def record_limit(self, topic: str) -> int | None:
        return None


def _replies(sink: Sink) -> Replies:
    replies = Replies(load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"}), sink)
    replies.refused_for_good = refused_for_good
    return replies


async def _reply_and_refuse(in_thread: bool) -> tuple[Sink, Ticket]:
    sink, ticket = Sink(), Ticket(1)
    replies = _replies(sink)
    await replies.send(REQUEST, b"v" * 2_000, None, ticket)
    await asyncio.sleep(0)  # the end of the turn: the batch goes to the sink
    assert len(sink.produced) == 1 and ticket.pending == 1
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    args = (too_large, _record("caller.replies", b"v" * 2_000))
    if in_thread:  # as an exactly-once commit polls, while the loop waits
        worker = threading.Thread(target=sink.reports[0], args=args)
        worker.start()
        worker.join()
        assert ticket.pending == 0, "from a thread, the error reply is not counted"
    else:
        sink.reports[0](*args)
        assert ticket.pending == 1, "on the loop, the commit waits for the error reply"
    assert ticket.dropped == 1
    for _ in range(3):  # the error reply is batched (and, from a thread, made on the loop)
        await asyncio.sleep(0)
    assert len(sink.produced) == 2
    sink.reports[1](None, _record("caller.replies", None))
    assert ticket.pending == 0 and ticket.dropped == 1
    return sink, ticket


def test_a_refused_reply_is_followed_by_an_error_reply_naming_why() -> None:
    for in_thread in (False, True):
        sink, _ticket = asyncio.run(_reply_and_refuse(in_thread))
        topic, value, headers = sink.produced[1]
        assert (topic, value) == ("caller.replies", None)
        assert headers[CORRELATION_ID] == b"c-1"
        assert headers[ERROR_TYPE] == b"DeliveryRefused"
        message = headers[ERROR_MESSAGE].decode()
        assert message.startswith("reply of 2000 bytes refused by caller.replies"), message
        assert "Message size too large" in message


def test_a_reply_lost_otherwise_is_not_answered_twice() -> None:
    async def scenario() -> Sink:
        sink, ticket = Sink(), Ticket(1)
        await _replies(sink).send(REQUEST, b"v", None, ticket)
        await asyncio.sleep(0)
        sink.reports[0](KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
        for _ in range(3):
            await asyncio.sleep(0)
        assert ticket.dropped == 1
        return sink

    # the broker may have it (a time-out is not a refusal): the caller gets it, or times out
    assert len(asyncio.run(scenario()).produced) == 1


def test_no_error_reply_once_the_loop_has_stopped() -> None:
    sink, ticket = Sink(), Ticket(1)
    replies = _replies(sink)

    async def reply() -> None:
        await replies.send(REQUEST, b"v", None, ticket)
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(reply())
        too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
        # a last flush on the loop's thread, once the loop has stopped (not yet closed)
        sink.reports[0](too_large, _record("caller.replies", b"v"))
    finally:
        loop.close()
    assert len(sink.produced) == 1 and ticket.pending == 0 and ticket.dropped == 1
