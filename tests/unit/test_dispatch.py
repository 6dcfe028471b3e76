"""The Dispatcher without a broker: hot and general paths, retries, dead letters, replies."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

from kit import Codec, Context, Schema, SchemaRepository, Service, load_settings
from kit.context import Ticket, TopicNotReady
from kit.dispatch import RECORD_OVERHEAD, TRANSIENT_ERRORS, Abandoned, Dispatcher
from kit.errors import (
    DecodeError,
    DeliveryError,
    DeliveryRefused,
    RequestTimeout,
    ServiceUnavailable,
)
from kit.rpc import request_headers
from kit.transport.memory import MemoryBroker, MemoryMessage
from tests.fixtures import SCHEMAS
from tests.fixtures.events import (
    CheckStock,
    InvoiceIssued,
    OrderChecked,
    OrderLine,
    OrderPlaced,
    StockLevel,
)

CODEC = Codec(SchemaRepository(SCHEMAS))
TOPIC = "shop.OrderPlaced"
PLACED = datetime(2026, 1, 1, tzinfo=UTC)


class Produced(NamedTuple):
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None

    @property
    def header(self) -> dict[str, bytes]:
        return dict(self.headers)


class RecordingSink:
    """A Sink that records every produce call and confirms it at once (or when told)."""

    def __init__(self, limit: int | None = None, *, confirm: bool = True) -> None:
        self.limit = limit
        self.confirm = confirm
        self.produced: list[Produced] = []
        self.callbacks: list[Any] = []

    def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:
        self.produced.append(Produced(topic, value, key, list(headers or []), partition))
        if self.confirm:
            on_delivery(None, None)
        else:
            self.callbacks.append(on_delivery)

    async def prepare(self, topic: str) -> None:
        pass

    def record_limit(self, topic: str) -> int | None:
        return self.limit

    def to(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]


class LazySink(RecordingSink):
    """Raises TopicNotReady for a topic until `prepare(topic)` has been awaited."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prepared: list[str] = []

    def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:
        if topic not in self.prepared:
            raise TopicNotReady(topic)
        super().produce(topic, value, key, headers, on_delivery, partition)

    async def prepare(self, topic: str) -> None:
        self.prepared.append(topic)


def settings(**overrides: Any):
    values = {"bootstrap_servers": "memory", "retry_backoff": 0.0, "retries": 2}
    return load_settings({}, **(values | overrides))


def order(n: int, quantity: int = 1) -> OrderPlaced:
    return OrderPlaced(
        order_id=f"o-{n}",
        customer="c",
        lines=[OrderLine(sku="tea", quantity=quantity, unit_price_cents=100 + n)],
        placed_at=PLACED,
    )


def inputs(*values: bytes | None, topic: str = TOPIC, partitions: int = 1) -> list[MemoryMessage]:
    broker = MemoryBroker(partitions)
    return [
        broker.append(
            topic, v, f"k-{i}".encode(), [("trace", f"t-{i}".encode())], partition=i % partitions
        )
        for i, v in enumerate(values)
    ]


def dispatcher(service: Service, sink: Any = None, **overrides: Any) -> Dispatcher:
    return Dispatcher(service, CODEC, settings(**overrides), sink or RecordingSink())


def run(coro):
    return asyncio.run(coro)


def failing_service(exc: Exception | None = None, **options: Any) -> tuple[Service, list[str]]:
    """A service whose handler records each call and always raises `exc`."""
    svc = Service("failing")
    calls: list[str] = []

    @svc.handler(**options)
    async def on_order(event: OrderPlaced) -> None:
        calls.append(event.order_id)
        raise exc if exc is not None else ValueError(f"cannot bill {event.order_id}")

    return svc, calls


# --- the hot path and the general path ---------------------------------------------


def billing_like(calls: list[str], *, takes_context: bool, is_async: bool) -> Service:
    """A handler that publishes two events, fails once on o-2 and always on quantity 0."""
    svc = Service("billing-test")
    flaky = {"o-2": 1}

    def body(event: OrderPlaced, ctx: Context | None) -> None:
        calls.append(event.order_id)
        if flaky.get(event.order_id):
            flaky[event.order_id] -= 1
            raise RuntimeError(f"flaky {event.order_id}")
        if event.lines[0].quantity == 0:
            raise ValueError(f"order {event.order_id} has a line with quantity 0")
        if ctx is not None:
            total = event.lines[0].quantity * event.lines[0].unit_price_cents
            ctx.publish(
                InvoiceIssued(
                    invoice_id=f"inv-{event.order_id}",
                    order_id=event.order_id,
                    total_cents=total,
                    issued_at=event.placed_at,
                ),
                key=event.order_id,
                headers={"from": ctx.topic},
            )
            ctx.publish(OrderChecked(order_id=event.order_id, accepted=True), key=ctx.key)

    if takes_context and is_async:

        @svc.handler()
        async def on_order(event: OrderPlaced, ctx: Context) -> None:
            body(event, ctx)
    elif takes_context:

        @svc.handler()
        def on_order(event: OrderPlaced, ctx: Context) -> None:
            body(event, ctx)
    elif is_async:

        @svc.handler()
        async def on_order(event: OrderPlaced) -> None:
            body(event, None)
    else:

        @svc.handler()
        def on_order(event: OrderPlaced) -> None:
            body(event, None)

    return svc


def without_stack(sink: RecordingSink) -> list[tuple[Any, ...]]:
    """The produced records, with the stacktrace header reduced to its last line (the
    frames of kit itself may differ between the paths; the exception may not)."""
    out = []
    for p in sink.produced:
        headers = [
            (k, v.decode().strip().splitlines()[-1].encode() if k == "kit-dlt-stacktrace" else v)
            for k, v in p.headers
        ]
        out.append((p.topic, p.value, p.key, headers, p.partition))
    return out


@pytest.mark.parametrize(
    ("takes_context", "is_async"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_hot_path_and_general_path_give_identical_results(takes_context, is_async) -> None:
    messages = inputs(
        CODEC.encode(order(1)),
        b"not avro",
        CODEC.encode(order(2)),  # fails once, then succeeds
        CODEC.encode(order(3, quantity=0)),  # always fails: dead-lettered
        None,  # a tombstone does not decode either
        CODEC.encode(order(5)),
    )

    def hot() -> tuple[Dispatcher, Ticket, list[str]]:
        calls: list[str] = []
        d = dispatcher(billing_like(calls, takes_context=takes_context, is_async=is_async))
        ticket = Ticket()
        run(d.handle_batch(messages, ticket))
        return d, ticket, calls

    def general() -> tuple[Dispatcher, Ticket, list[str]]:
        calls: list[str] = []
        d = dispatcher(billing_like(calls, takes_context=takes_context, is_async=is_async))
        ticket = Ticket()

        async def each() -> None:
            for msg in messages:
                await d.handle(msg, ticket)

        run(each())
        return d, ticket, calls

    (hd, ht, hcalls), (gd, gt, gcalls) = hot(), general()
    assert hcalls == gcalls == ["o-1", "o-2", "o-2", "o-3", "o-3", "o-3", "o-5"]
    assert without_stack(hd.sink) == without_stack(gd.sink)
    assert (hd.handled, hd.dead_lettered) == (gd.handled, gd.dead_lettered) == (3, 3)
    assert ht.pending == gt.pending == 0 and ht.failures == gt.failures == []
    assert ht.offsets == {(TOPIC, 0): 6}  # every record of the batch counts as handled
    letters = hd.sink.to(f"{TOPIC}.dlt")
    assert [p.key for p in letters] == [b"k-1", b"k-3", b"k-4"]
    assert [p.header["kit-dlt-reason"] for p in letters] == [b"decode", b"handler", b"decode"]
    if takes_context:
        assert [p.topic for p in hd.sink.produced[:2]] == [
            "billing.InvoiceIssued",
            "shop.OrderChecked",
        ]


def test_partitions_are_handled_each_in_order_and_each_get_their_offset() -> None:
    svc = Service("positions")
    seen: list[tuple[int, int]] = []

    @svc.handler()
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        seen.append((ctx.partition, int(event.order_id[2:])))
        await asyncio.sleep(0)  # let the other partitions run meanwhile
        ctx.publish(OrderChecked(order_id=event.order_id, accepted=True))

    d = dispatcher(svc)
    ticket = Ticket()
    run(d.handle_batch(inputs(*(CODEC.encode(order(n)) for n in range(9)), partitions=3), ticket))
    for p in range(3):
        assert [n for part, n in seen if part == p] == [p, p + 3, p + 6]
    assert seen[:3] == [(0, 0), (1, 1), (2, 2)]  # concurrently: not one partition after another
    assert ticket.offsets == {(TOPIC, 0): 3, (TOPIC, 1): 3, (TOPIC, 2): 3}
    assert len(d.sink.to("shop.OrderChecked")) == 9


def test_records_of_a_topic_without_handler_are_skipped_and_counted_as_handled() -> None:
    svc, calls = failing_service()
    d = dispatcher(svc)
    ticket = Ticket()
    run(d.handle_batch(inputs(CODEC.encode(order(1)), topic="elsewhere"), ticket))
    assert calls == [] and d.sink.produced == []
    assert ticket.offsets == {("elsewhere", 0): 1}


# --- retries -------------------------------------------------------------------------


def test_a_failing_handler_is_retried_with_exponential_backoff_up_to_the_maximum(
    monkeypatch,
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    svc, calls = failing_service()
    d = dispatcher(svc, retries=4, retry_backoff=0.01, retry_backoff_max=0.05)
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert calls == ["o-1"] * 5
    assert waits == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert d.sink.produced[0].header["kit-dlt-attempts"] == b"5"


def test_a_handler_that_recovers_within_its_retries_publishes_once_and_is_not_dead_lettered() -> (
    None
):
    calls: list[str] = []
    d = dispatcher(billing_like(calls, takes_context=True, is_async=True), retries=1)
    ticket = Ticket()
    run(d.handle_batch(inputs(CODEC.encode(order(2))), ticket))
    assert calls == ["o-2", "o-2"]
    assert [p.topic for p in d.sink.produced] == ["billing.InvoiceIssued", "shop.OrderChecked"]
    assert d.dead_lettered == 0 and ticket.offsets == {(TOPIC, 0): 1}


@pytest.mark.parametrize(("setting", "option", "calls_made"), [(5, None, 6), (5, 0, 1), (0, 2, 3)])
def test_the_handlers_retries_option_overrides_the_setting(setting, option, calls_made) -> None:
    svc, calls = failing_service(retries=option)
    d = dispatcher(svc, retries=setting)
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert len(calls) == calls_made
    assert d.sink.produced[0].header["kit-dlt-attempts"] == str(calls_made).encode()


# --- the transient-error window ----------------------------------------------------------


def test_the_transient_errors_are_the_documented_ones() -> None:
    assert set(TRANSIENT_ERRORS) == {ServiceUnavailable, RequestTimeout, DeliveryError}


TRANSIENT = [
    ServiceUnavailable("stockroom"),
    RequestTimeout("stockroom", "check_stock", "c-1", 2.0),
    DeliveryError("broker unreachable"),
    DeliveryRefused("too large"),  # a subclass: still a failure of a dependency
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried_past_the_retry_count_within_the_window(error) -> None:
    svc = Service("caller")
    calls: list[str] = []

    @svc.handler()
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        calls.append(event.order_id)
        if len(calls) <= 5:
            raise error
        ctx.publish(OrderChecked(order_id=event.order_id, accepted=True))

    d = dispatcher(svc, retries=0, transient_timeout=30.0)
    ticket = Ticket()
    run(d.handle_batch(inputs(CODEC.encode(order(1)), CODEC.encode(order(2))), ticket))
    assert calls == ["o-1"] * 6 + ["o-2"]  # in order: o-2 waits for o-1
    assert [p.topic for p in d.sink.produced] == ["shop.OrderChecked"] * 2
    assert d.dead_lettered == 0 and ticket.offsets == {(TOPIC, 0): 2}


def test_a_transient_failure_that_outlasts_its_window_is_dead_lettered() -> None:
    svc, calls = failing_service(ServiceUnavailable("stockroom"), transient_timeout=0.05)
    d = dispatcher(svc, retries=0, retry_backoff=0.01)
    started = time.monotonic()
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert time.monotonic() - started >= 0.05
    (letter,) = d.sink.produced
    assert letter.header["kit-dlt-reason"] == b"handler"
    assert letter.header["kit-dlt-exception-type"] == b"ServiceUnavailable"
    assert int(letter.header["kit-dlt-attempts"]) == len(calls) >= 2


def test_a_retry_wait_never_outlasts_the_transient_window() -> None:
    svc, calls = failing_service(RequestTimeout("stockroom", "check_stock", "c-1", 1.0))
    d = dispatcher(
        svc, retries=0, retry_backoff=60.0, retry_backoff_max=60.0, transient_timeout=0.05
    )

    async def bounded() -> None:
        await asyncio.wait_for(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()), 5)

    run(bounded())  # a 60 s backoff would time out here
    assert d.dead_lettered == 1 and len(calls) >= 2


@pytest.mark.parametrize(("setting", "option"), [(0.0, None), (30.0, 0.0)])
def test_a_zero_transient_timeout_counts_transient_errors_as_ordinary_failures(
    setting, option
) -> None:
    svc, calls = failing_service(ServiceUnavailable("stockroom"), transient_timeout=option)
    d = dispatcher(svc, retries=1, transient_timeout=setting)
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert calls == ["o-1", "o-1"]
    assert d.sink.produced[0].header["kit-dlt-attempts"] == b"2"


def test_other_errors_use_the_retry_count_even_with_a_transient_window() -> None:
    svc, calls = failing_service(KeyError("sku"))
    d = dispatcher(svc, retries=1, transient_timeout=30.0)
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert calls == ["o-1", "o-1"] and d.dead_lettered == 1


# --- dead letters --------------------------------------------------------------------------


DLT_HEADERS = [
    "kit-dlt-reason",
    "kit-dlt-exception-type",
    "kit-dlt-exception-message",
    "kit-dlt-original-topic",
    "kit-dlt-original-partition",
    "kit-dlt-original-offset",
    "kit-dlt-original-timestamp",
    "kit-dlt-attempts",
    "kit-dlt-service",
    "kit-dlt-group",
    "kit-dlt-handler",
]


def test_a_record_that_cannot_be_decoded_is_dead_lettered_whole_with_its_reason() -> None:
    svc, calls = failing_service()
    messages = inputs(
        CODEC.encode(order(0)), CODEC.encode(order(1)), b"\xc3\x01garbage", partitions=3
    )
    bad = messages[2]
    d = dispatcher(svc, group_id="billing-blue")
    ticket = Ticket()
    run(d.handle_batch([bad], ticket))
    assert calls == []  # the handler never sees it
    (letter,) = d.sink.produced
    assert letter.topic == f"{TOPIC}.dlt" and letter.partition == bad.partition() == 2
    assert (letter.key, letter.value) == (bad.key(), bad.value())
    assert letter.headers[0] == ("trace", b"t-2")  # the original headers come first
    h = letter.header
    assert [k for k, _ in letter.headers[1:]] == DLT_HEADERS  # no stacktrace for a decode failure
    assert h["kit-dlt-reason"] == b"decode"
    assert h["kit-dlt-exception-type"] == b"DecodeError"
    with pytest.raises(DecodeError) as decoding:
        CODEC.decode(bad.value(), OrderPlaced)
    assert h["kit-dlt-exception-message"] == str(decoding.value).encode()
    assert h["kit-dlt-original-topic"] == TOPIC.encode()
    assert h["kit-dlt-original-partition"] == b"2"
    assert h["kit-dlt-original-offset"] == str(bad.offset()).encode()
    assert h["kit-dlt-original-timestamp"] == str(bad.timestamp()[1]).encode()
    assert h["kit-dlt-attempts"] == b"0"
    assert h["kit-dlt-service"] == b"failing"
    assert h["kit-dlt-group"] == b"billing-blue"
    assert h["kit-dlt-handler"] == b"on_order"
    assert ticket.offsets == {(TOPIC, 2): bad.offset() + 1} and d.dead_lettered == 1


def test_a_handler_failure_is_dead_lettered_with_attempts_and_stacktrace() -> None:
    svc, calls = failing_service(dead_letter_topic="billing.failed")
    d = dispatcher(svc, retries=2)
    (msg,) = inputs(CODEC.encode(order(7)))
    run(d.handle_batch([msg], Ticket()))
    (letter,) = d.sink.produced
    assert letter.topic == "billing.failed" and letter.value == msg.value()
    h = letter.header
    assert [k for k, _ in letter.headers[1:]] == [*DLT_HEADERS, "kit-dlt-stacktrace"]
    assert h["kit-dlt-reason"] == b"handler"
    assert h["kit-dlt-exception-type"] == b"ValueError"
    assert h["kit-dlt-exception-message"] == b"cannot bill o-7"
    assert h["kit-dlt-attempts"] == b"3" and len(calls) == 3
    assert h["kit-dlt-group"] == b"failing"  # the service name when no group is set
    stack = h["kit-dlt-stacktrace"].decode()
    assert "on_order" in stack and stack.rstrip().endswith("ValueError: cannot bill o-7")


def test_the_dead_letter_suffix_setting_names_the_topic() -> None:
    svc, _ = failing_service()
    d = dispatcher(svc, dead_letter_suffix=".failed")
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    assert [p.topic for p in d.sink.produced] == [f"{TOPIC}.failed"]


def test_an_input_whose_output_was_refused_is_dead_lettered_with_reason_delivery() -> None:
    svc, _ = failing_service()
    d = dispatcher(svc)
    (msg,) = inputs(CODEC.encode(order(1)))
    ticket = Ticket()
    refused = DeliveryRefused("MSG_SIZE_TOO_LARGE for billing.InvoiceIssued")
    run(d.dead_letter(msg, svc.handlers[0], refused, 1, ticket))
    (letter,) = d.sink.produced
    h = letter.header
    assert h["kit-dlt-reason"] == b"delivery"
    assert h["kit-dlt-exception-type"] == b"DeliveryRefused"
    assert h["kit-dlt-exception-message"] == b"MSG_SIZE_TOO_LARGE for billing.InvoiceIssued"
    assert "kit-dlt-stacktrace" not in h
    assert ticket.pending == 0 and d.dead_lettered == 1


def test_long_exception_messages_and_stacktraces_are_bounded() -> None:
    svc, _ = failing_service(ValueError("x" * 10_000 + "END"), retries=0)
    d = dispatcher(svc)
    run(d.handle_batch(inputs(CODEC.encode(order(1))), Ticket()))
    h = d.sink.produced[0].header
    assert h["kit-dlt-exception-message"] == b"x" * 4096
    assert len(h["kit-dlt-stacktrace"]) <= 8192
    assert h["kit-dlt-stacktrace"].rstrip().endswith(b"xEND")  # the end is kept


def test_a_dead_letter_too_large_for_its_topic_is_cut_to_fit() -> None:
    limit = 2_000
    sink = RecordingSink(limit)
    svc, _ = failing_service()
    d = dispatcher(svc, sink)
    value = b"\xc3\x01" + bytes(range(256)) * 40  # 10 242 bytes that do not decode
    (msg,) = inputs(value)
    run(d.handle_batch([msg], Ticket()))
    (letter,) = sink.produced
    assert letter.header["kit-dlt-truncated"] == str(len(value)).encode()
    assert letter.value and value.startswith(letter.value) and len(letter.value) < len(value)
    size = (
        len(letter.key or b"") + len(letter.value) + sum(len(k) + len(v) for k, v in letter.headers)
    )
    assert size + RECORD_OVERHEAD <= limit  # with the record's own wire overhead
    assert letter.header["kit-dlt-original-offset"] == b"0"  # where the whole record is


def test_a_dead_letter_that_fits_is_kept_whole() -> None:
    sink = RecordingSink(1_000_000)
    svc, _ = failing_service()
    d = dispatcher(svc, sink)
    (msg,) = inputs(b"x" * 10_000)
    run(d.handle_batch([msg], Ticket()))
    (letter,) = sink.produced
    assert letter.value == msg.value() and "kit-dlt-truncated" not in letter.header


def test_max_value_cuts_the_dead_letter_copy() -> None:
    svc, _ = failing_service()
    d = dispatcher(svc)
    (msg,) = inputs(CODEC.encode(order(1)))
    run(d.dead_letter(msg, svc.handlers[0], DeliveryRefused("too big"), 1, Ticket(), max_value=0))
    (letter,) = d.sink.produced
    assert (
        letter.value == b"" and letter.header["kit-dlt-truncated"] == str(len(msg.value())).encode()
    )


def test_outputs_and_dead_letters_wait_for_their_topics_to_be_prepared() -> None:
    sink = LazySink(confirm=False)
    calls: list[str] = []
    d = dispatcher(billing_like(calls, takes_context=True, is_async=True), sink, retries=0)
    ticket = Ticket()
    messages = inputs(CODEC.encode(order(1)), b"bad", CODEC.encode(order(3)))
    run(d.handle_batch(messages, ticket))
    assert sink.prepared == ["billing.InvoiceIssued", "shop.OrderChecked", f"{TOPIC}.dlt"]
    assert [(p.topic, p.key) for p in sink.produced] == [
        ("billing.InvoiceIssued", b"o-1"),
        ("shop.OrderChecked", b"k-0"),
        (f"{TOPIC}.dlt", b"k-1"),
        ("billing.InvoiceIssued", b"o-3"),
        ("shop.OrderChecked", b"k-2"),
    ]
    assert ticket.pending == 5  # one per record queued, none counted twice
    for confirm in sink.callbacks:
        confirm(None, None)
    ticket.closed = True
    assert ticket.done and ticket.offsets == {(TOPIC, 0): 3}


def test_a_failed_output_delivery_is_kept_with_the_input_record_that_produced_it() -> None:
    sink = RecordingSink(confirm=False)
    calls: list[str] = []
    d = dispatcher(billing_like(calls, takes_context=True, is_async=True), sink)
    ticket = Ticket()
    messages = inputs(CODEC.encode(order(1)), b"bad")
    run(d.handle_batch(messages, ticket))
    (invoice, checked, letter) = sink.callbacks
    invoice(None, None)
    checked("MSG_SIZE_TOO_LARGE", "the refused record")
    letter("UNKNOWN_TOPIC", None)
    ticket.closed = True
    assert ticket.done
    assert [(f.source, f.error, f.kind) for f in ticket.failures] == [
        (messages[0], "MSG_SIZE_TOO_LARGE", "output"),
        (messages[1], "UNKNOWN_TOPIC", "dead-letter"),
    ]
    assert ticket.failures[0].produced == "the refused record"


# --- stopping ----------------------------------------------------------------------------


def test_stopping_during_a_retry_wait_abandons_the_record_uncommitted() -> None:
    svc = Service("slow")
    calls: list[str] = []

    async def scenario() -> tuple[Dispatcher, Ticket]:
        entered = asyncio.Event()

        @svc.handler()
        async def on_order(event: OrderPlaced) -> None:
            calls.append(event.order_id)
            if event.order_id == "o-1":
                entered.set()
                raise ValueError("not yet")

        d = dispatcher(svc, retries=3, retry_backoff=60.0, retry_backoff_max=60.0)
        d.stopping = asyncio.Event()
        ticket = Ticket()
        task = asyncio.create_task(
            d.handle_batch(inputs(*(CODEC.encode(order(n)) for n in range(3))), ticket)
        )
        await entered.wait()
        d.stopping.set()
        await asyncio.wait_for(task, 5)  # a 60 s retry wait would time out here
        return d, ticket

    d, ticket = run(scenario())
    assert calls == ["o-0", "o-1"]  # o-1 is not tried again and o-2 is not started
    assert ticket.offsets == {(TOPIC, 0): 1}  # only o-0 counts: o-1 is handled after a restart
    assert d.sink.produced == [] and d.dead_lettered == 0


def test_handle_raises_abandoned_when_stopping_before_a_retry() -> None:
    svc, calls = failing_service()
    d = dispatcher(svc, retries=3, retry_backoff=60.0)

    async def scenario() -> None:
        d.stopping = asyncio.Event()
        d.stopping.set()
        with pytest.raises(Abandoned):
            await asyncio.wait_for(d.handle(inputs(CODEC.encode(order(1)))[0], Ticket()), 5)

    run(scenario())
    assert calls == ["o-1"] and d.sink.produced == []


# --- responders ----------------------------------------------------------------------------


def stockroom(**options: Any) -> tuple[Service, list[str]]:
    svc = Service("stockroom")
    calls: list[str] = []

    @svc.responder(**options)
    async def check_stock(request: CheckStock, ctx: Context) -> StockLevel:
        calls.append(request.sku)
        if request.sku == "down":
            raise ServiceUnavailable("warehouse")
        if request.sku not in ("tea", "cake"):
            raise KeyError(f"unknown sku {request.sku!r}")
        ctx.publish(OrderChecked(order_id=request.sku, accepted=True))
        return StockLevel(sku=request.sku, available=12, enough=request.quantity <= 12)

    return svc, calls


def request(
    value: bytes | None,
    corr: str = "c-1",
    *,
    deadline_ms: int | None = None,
    reply_to: str = "_kit.replies.me",
) -> MemoryMessage:
    deadline = int(time.time() * 1000) + 60_000 if deadline_ms is None else deadline_ms
    headers = request_headers(corr, reply_to, deadline, "stockroom", "check_stock")
    return MemoryBroker().append("stockroom.check_stock", value, b"key", headers)


def test_a_responder_replies_with_the_encoded_result_after_its_outputs() -> None:
    svc, calls = stockroom()
    d = dispatcher(svc)
    ticket = Ticket()
    run(d.handle_batch([request(CODEC.encode(CheckStock(sku="tea", quantity=2)), "c-7")], ticket))
    assert calls == ["tea"]
    (checked, reply) = d.sink.produced
    assert checked.topic == "shop.OrderChecked"
    assert reply.topic == "_kit.replies.me" and reply.headers == [("kit-correlation-id", b"c-7")]
    assert CODEC.decode(reply.value, StockLevel) == StockLevel(sku="tea", available=12, enough=True)
    assert ticket.offsets == {("stockroom.check_stock", 0): 1} and ticket.pending == 0


@pytest.mark.parametrize("tracebacks", [False, True])
def test_a_failing_responder_sends_the_error_to_its_caller_instead_of_a_dead_letter(
    tracebacks,
) -> None:
    svc, calls = stockroom()
    d = dispatcher(svc, retries=3, remote_tracebacks=tracebacks)
    run(d.handle_batch([request(CODEC.encode(CheckStock(sku="caviar", quantity=1)))], Ticket()))
    assert calls == ["caviar"]  # responders do not retry: the caller's deadline is running
    (reply,) = d.sink.produced
    assert reply.value is None
    h = reply.header
    assert h["kit-correlation-id"] == b"c-1"
    assert h["kit-error"] == b"KeyError"
    assert h["kit-error-message"] == b"\"unknown sku 'caviar'\""
    if tracebacks:
        assert "check_stock" in h["kit-error-trace"].decode()
    else:
        assert "kit-error-trace" not in h
    assert d.dead_lettered == 0


def test_a_responder_does_not_retry_transient_errors_by_default() -> None:
    svc, calls = stockroom()
    d = dispatcher(svc, transient_timeout=30.0)
    run(d.handle_batch([request(CODEC.encode(CheckStock(sku="down", quantity=1)))], Ticket()))
    assert calls == ["down"]
    assert d.sink.produced[0].header["kit-error"] == b"ServiceUnavailable"


def test_a_request_that_cannot_be_decoded_is_dead_lettered_and_its_caller_told() -> None:
    svc, calls = stockroom()
    d = dispatcher(svc)
    run(d.handle_batch([request(b"garbage")], Ticket()))
    assert calls == []
    (letter, reply) = d.sink.produced
    assert letter.topic == "stockroom.check_stock.dlt"
    assert letter.header["kit-dlt-reason"] == b"decode"
    assert reply.topic == "_kit.replies.me" and reply.header["kit-error"] == b"DecodeError"


def test_a_failing_responder_without_a_caller_is_dead_lettered() -> None:
    svc, _ = stockroom()
    d = dispatcher(svc)
    msg = MemoryBroker().append(
        "stockroom.check_stock", CODEC.encode(CheckStock(sku="caviar", quantity=1))
    )
    run(d.handle_batch([msg], Ticket()))
    (letter,) = d.sink.produced
    assert letter.topic == "stockroom.check_stock.dlt"
    assert letter.header["kit-dlt-reason"] == b"handler"
    assert letter.header["kit-dlt-handler"] == b"check_stock"


def test_replies_go_to_the_reply_sink_and_a_failed_reply_is_only_counted() -> None:
    svc, _ = stockroom()
    replies = RecordingSink(confirm=False)
    d = dispatcher(svc)
    d.replies.sink = replies
    ticket = Ticket()
    run(handled_and_flushed(d, [request(CODEC.encode(CheckStock(sku="tea", quantity=1)))], ticket))
    assert [p.topic for p in d.sink.produced] == ["shop.OrderChecked"]
    assert [p.topic for p in replies.produced] == ["_kit.replies.me"]
    replies.callbacks[0]("UNKNOWN_TOPIC_OR_PART", None)
    ticket.closed = True
    assert ticket.done and ticket.failures == [] and ticket.dropped == 1


async def handled_and_flushed(d: Dispatcher, records: list[Any], ticket: Ticket) -> None:
    """handle_batch, then the end of its loop turn, when the queued replies go out."""
    await d.handle_batch(records, ticket)
    await asyncio.sleep(0)


def test_a_reply_the_producer_refuses_is_dropped_and_its_request_counts_as_handled() -> None:
    class FullSink(RecordingSink):
        def produce(self, topic, value, key, headers, on_delivery, partition=None) -> None:
            raise DeliveryError("producer queue stayed full for 30s")

    svc, calls = stockroom()
    d = dispatcher(svc)
    d.replies.sink = FullSink()
    ticket = Ticket()
    run(handled_and_flushed(d, [request(CODEC.encode(CheckStock(sku="tea", quantity=1)))], ticket))
    ticket.closed = True
    assert calls == ["tea"] and ticket.done and ticket.dropped == 1  # caller: RequestTimeout
    assert ticket.offsets == {("stockroom.check_stock", 0): 1} and ticket.failures == []


def test_a_reply_to_a_topic_that_is_gone_is_dropped() -> None:
    svc, calls = stockroom()
    d = dispatcher(svc)

    async def gone(topic: str) -> bool:
        return False

    d.replies.topic_exists = gone
    ticket = Ticket()
    run(d.handle_batch([request(CODEC.encode(CheckStock(sku="tea", quantity=1)))], ticket))
    assert calls == ["tea"] and d.replies.dropped == 1
    assert [p.topic for p in d.sink.produced] == ["shop.OrderChecked"]
    assert ticket.offsets == {("stockroom.check_stock", 0): 1}


def test_an_expired_request_is_skipped_but_counted_as_handled() -> None:
    svc, calls = stockroom()
    d = dispatcher(svc)
    ticket = Ticket()
    past = int(time.time() * 1000) - 1
    value = CODEC.encode(CheckStock(sku="tea", quantity=1))
    run(d.handle_batch([request(value, "old", deadline_ms=past)], ticket))
    assert calls == [] and d.sink.produced == [] and d.expired == 1
    assert ticket.offsets == {("stockroom.check_stock", 0): 1}
    run(d.handle_batch([request(value, "new")], Ticket()))
    assert calls == ["tea"] and d.expired == 1


def test_requests_of_one_partition_are_answered_in_order_whatever_each_needs() -> None:
    """The hot path hands an expired, an undecodable or a failing request to the full
    path, and goes on with the next; every answer goes out in order, and all count."""
    svc, calls = stockroom()
    d = dispatcher(svc)
    broker, now_ms = MemoryBroker(), int(time.time() * 1000)

    def call(value: bytes, corr: str, deadline_ms: int = now_ms + 60_000) -> MemoryMessage:
        headers = request_headers(corr, "_kit.replies.me", deadline_ms, "stockroom", "check_stock")
        return broker.append("stockroom.check_stock", value, b"key", headers)

    tea, cake = (CODEC.encode(CheckStock(sku=s, quantity=1)) for s in ("tea", "cake"))
    batch = [
        call(tea, "a"),
        call(tea, "old", now_ms - 1),
        call(b"garbage", "bad"),
        call(CODEC.encode(CheckStock(sku="caviar", quantity=1)), "boom"),
        call(cake, "b"),
    ]
    ticket = Ticket()
    run(d.handle_batch(batch, ticket))
    assert calls[0] == "tea" and calls[-1] == "cake" and set(calls[1:-1]) == {"caviar"}
    replies = [(p.header["kit-correlation-id"], p.header.get("kit-error")) for p in d.sink.produced
               if p.topic == "_kit.replies.me"]  # fmt: skip
    assert replies == [(b"a", None), (b"bad", b"DecodeError"), (b"boom", b"KeyError"), (b"b", None)]
    assert d.expired == 1 and d.handled == 2  # the others: skipped, dead-lettered
    assert ticket.offsets == {("stockroom.check_stock", 0): 5} and ticket.pending == 0


def test_a_responder_returning_something_else_than_an_event_tells_its_caller() -> None:
    svc = Service("stockroom")

    @svc.responder()
    async def check_stock(request: CheckStock) -> StockLevel:
        return {"sku": request.sku}  # type: ignore[return-value]

    d = dispatcher(svc)
    run(d.handle_batch([request(CODEC.encode(CheckStock(sku="tea", quantity=1)))], Ticket()))
    (reply,) = d.sink.produced
    assert reply.header["kit-error"] == b"EncodeError"
    assert b"dict" in reply.header["kit-error-message"]


def test_a_writer_schema_not_known_yet_is_looked_up_before_the_record_is_decoded() -> None:
    definition = CODEC.repository.get(TOPIC).definition
    newer = Schema.from_json(  # a newer version of the schema, with one more field
        definition | {"fields": [*definition["fields"], {"name": "channel", "type": "string"}]}
    )
    looked_up: list[bytes] = []

    async def schema_topic(fp: bytes) -> Schema | None:
        looked_up.append(fp)
        return newer if fp == newer.fingerprint else None

    def written_by_newer(n: int) -> bytes:
        datum = order(n).model_dump() | {"channel": "web"}
        return CODEC.encode_datum(newer, datum)

    calls: list[str] = []
    codec = Codec(CODEC.repository, async_resolver=schema_topic)
    svc = billing_like(calls, takes_context=True, is_async=True)
    d = Dispatcher(svc, codec, settings(), RecordingSink())
    run(d.handle_batch(inputs(written_by_newer(1), written_by_newer(3)), Ticket()))
    assert calls == ["o-1", "o-3"] and d.dead_lettered == 0
    assert looked_up == [newer.fingerprint]  # once: then it is known


def test_a_record_whose_writer_schema_is_nowhere_is_dead_lettered_as_decode() -> None:
    svc, calls = failing_service()
    d = dispatcher(svc)
    unknown = b"\xc3\x01" + b"\x00" * 8 + b"body"
    run(d.handle_batch(inputs(unknown), Ticket()))
    assert calls == []
    h = d.sink.produced[0].header
    assert h["kit-dlt-reason"] == b"decode"
    assert b"0000000000000000" in h["kit-dlt-exception-message"]  # names the fingerprint
