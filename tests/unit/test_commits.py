"""The commit rule without a broker: a refused delivery keeps its batch at the head until it
is resolved, whatever happens while it is being resolved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError

from kit import Service, load_settings
from kit.commits import Commits
from kit.context import Ticket
from kit.dispatch import Dispatcher
from kit.errors import BrokerError, DeliveryError, ServiceUnavailable
from kit.transport.memory import MemoryBroker, MemoryMessage
from kit.transport.sink import Unsent
from tests.fixtures.events import OrderPlaced
from tests.unit.test_dispatch import CODEC, TOPIC, RecordingSink
from tests.unit.test_dispatch import order as order_event

SETTINGS = load_settings(bootstrap_servers="memory", retry_backoff=0.0, retry_backoff_max=0.0)


class Sink(RecordingSink):
    """A RecordingSink with what Commits reads of a KafkaSink."""

    def __init__(self, *, fail_prepare: bool = False, confirm: bool = True) -> None:
        super().__init__(confirm=confirm)
        self.limits: dict[str, int] = {"out": 512_000}
        self.known: set[str] = {"out"}
        self.fail_prepare = fail_prepare

    def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:  # type: ignore[no-untyped-def]
        if topic not in self.known:
            from kit.context import TopicNotReady

            raise TopicNotReady(topic)
        super().produce(topic, value, key, headers, on_delivery, partition)

    async def prepare(self, topic: str) -> None:
        if self.fail_prepare:
            raise BrokerError(f"cannot create topic {topic!r}")
        self.known.add(topic)

    def learn_limits(self, topics: Any) -> dict[str, int]:
        return {}

    def record_limit(self, topic: str) -> int | None:
        return self.limits.get(topic, 1_000_000)


def service() -> Service:
    svc = Service("svc")

    @svc.handler(topic=TOPIC)
    async def on_order(event: OrderPlaced) -> None:
        return None

    return svc


def refused_batch(commits: Commits) -> tuple[Ticket, MemoryMessage]:
    """A finished batch of one input whose 700 kB output the broker refused as too large."""
    source = MemoryBroker().append(TOPIC, CODEC.encode(order_event(1)))
    ticket = Ticket()
    ticket.offsets[(TOPIC, 0)] = 1
    ticket.pending = 1
    ticket.output_of(source)(
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Unsent("out", None, b"x" * 700_000, None, None)
    )
    ticket.closed = True
    commits.tickets.append(ticket)
    return ticket, source


def make(sink: Sink) -> Commits:
    dispatcher = Dispatcher(service(), CODEC, SETTINGS, sink)
    return Commits(SETTINGS, dispatcher, sink, lambda _timeout: 0)  # type: ignore[arg-type]


def test_a_refused_output_dead_letters_its_input_then_stores_past_it() -> None:
    sink = Sink(confirm=False)
    commits = make(sink)
    _ticket, source = refused_batch(commits)
    asyncio.run(commits.settle())
    assert commits.take() == {}, "nothing stored before the dead letter is confirmed"
    (dead,) = sink.to(f"{TOPIC}.dlt")
    assert dead.header["kit-dlt-reason"] == b"delivery"
    assert dead.value == source.value()
    (confirm,) = sink.callbacks
    confirm(None, None)
    asyncio.run(commits.settle())
    assert commits.take() == {(TOPIC, 0): 1}


def test_a_dead_letter_that_cannot_even_be_queued_stops_without_storing() -> None:
    """The review's case (b): dead_letter raised (its topic could not be made), and a later
    settle (the close's) popped the batch with its failures gone and stored past it."""
    sink = Sink(fail_prepare=True)
    commits = make(sink)
    ticket, _source = refused_batch(commits)
    with pytest.raises(BrokerError):
        asyncio.run(commits.settle())
    assert ticket.failures, "the failures stay with the batch"
    assert isinstance(commits.failed, DeliveryError)
    with pytest.raises(DeliveryError):
        asyncio.run(commits.settle())  # as the close would
    asyncio.run(commits.quiesce(0.1))
    assert commits.take() == {}
    assert list(commits.tickets) == [ticket]


def test_a_settle_meanwhile_does_not_pop_a_batch_being_resolved() -> None:
    """The review's case (a): while one settle awaits inside resolve, another (a revoke's)
    saw the batch done with no failures and stored past the refused record."""
    sink = Sink()
    commits = make(sink)
    refused_batch(commits)
    entered, release = asyncio.Event(), asyncio.Event()
    real = commits.verdict

    async def slow_verdict(failure: Any) -> Any:
        entered.set()
        await release.wait()
        return await real(failure)

    commits.verdict = slow_verdict  # type: ignore[method-assign]

    async def scenario() -> dict[tuple[str, int], int]:
        first = asyncio.create_task(commits.settle())
        await entered.wait()
        second = asyncio.create_task(commits.settle())
        await asyncio.sleep(0)  # let the second one run as far as it can
        stored_meanwhile = commits.take()
        release.set()
        await asyncio.gather(first, second)
        return stored_meanwhile

    assert asyncio.run(scenario()) == {}


def test_a_dead_letter_keeps_going_when_a_header_value_is_null() -> None:
    """Review finding: confluent-kafka gives None for a null header value; sizing the dead
    letter did len(None) and crashed the service on that record for ever."""
    sink = RecordingSink(limit=10_000)
    dispatcher = Dispatcher(service(), CODEC, SETTINGS, sink)
    msg = MemoryBroker().append(TOPIC, b"not avro", headers=[("trace", None)])  # type: ignore[list-item]
    asyncio.run(dispatcher.handle(msg, Ticket()))
    (dead,) = sink.to(f"{TOPIC}.dlt")
    assert dead.header["kit-dlt-reason"] == b"decode"


def test_a_long_transient_window_with_no_backoff_does_not_overflow() -> None:
    """Review finding: retry_backoff * 2**(attempt-1) overflowed past 1024 attempts."""
    settings = load_settings(
        bootstrap_servers="memory", retry_backoff=0.0, retry_backoff_max=0.0, transient_timeout=0.3
    )
    sink = RecordingSink()
    svc = Service("svc")
    calls = [0]

    @svc.handler(topic=TOPIC)
    async def on_order(event: OrderPlaced) -> None:
        calls[0] += 1
        raise ServiceUnavailable("stock")

    dispatcher = Dispatcher(svc, CODEC, settings, sink)
    msg = MemoryBroker().append(TOPIC, CODEC.encode(order_event(1)))
    asyncio.run(dispatcher.handle(msg, Ticket()))
    assert calls[0] > 1024
    assert len(sink.to(f"{TOPIC}.dlt")) == 1
