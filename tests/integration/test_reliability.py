"""Nothing lost on a real broker: refused deliveries, oversize dead letters, thread ownership,
rebalances while offsets are stored, and transient failures of a dependency (issue 8)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kit import Codec, Context, Service, Settings
from kit.errors import ServiceUnavailable
from kit.runtime import Runtime
from kit.testing.wait import wait_until_async
from tests.fixtures.events import InvoiceIssued, OrderPlaced
from tests.integration.helpers import order, produce_raw, read_raw, running

pytestmark = pytest.mark.integration

CODEC = Codec(OrderPlaced.__kit_repository__)


def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=5).topics.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            return
    raise AssertionError(f"topic {name} not ready")


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (-1001 where none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def invoicing(orders: str, invoices: str, group: str, big: set[str] | None = None) -> Service:
    """orders → invoices; the orders named in `big` make a 700 kB invoice."""
    svc = Service("invoicing", group_id=group)

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        pad = "x" * 700_000 if big and event.order_id in big else ""
        ctx.publish(
            InvoiceIssued(
                invoice_id=f"i-{event.order_id}{pad}",
                order_id=event.order_id,
                total_cents=1,
                issued_at=event.placed_at,
            ),
            key=ctx.key,
            topic=invoices,
        )

    return svc


def test_an_output_the_broker_refuses_dead_letters_its_input_and_loses_nothing(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """Defect 1, natural trigger: one 700 kB output on a topic that takes 512 kB."""
    orders, invoices, group = unique_name("orders"), unique_name("invoices"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 3)
    create_topic(kafka_bootstrap, invoices, 3, **{"max.message.bytes": "512000"})
    n = 3000
    rows = [
        {"value": CODEC.encode(order(i)), "key": f"k{i % 50}".encode(), "partition": i % 3}
        for i in range(n)
    ]
    produce_raw(kafka_bootstrap, orders, rows)
    settings = kit_settings.model_copy(update={"batch_size": 50})
    svc = invoicing(orders, invoices, group, big={"o-1500"})

    async def scenario() -> Runtime:
        async with running(svc, settings) as runtime:
            await wait_until_async(
                lambda: runtime.dispatcher.handled >= n and runtime.dispatcher.dead_lettered,
                timeout=60,
                what="every order handled and the refused one dead-lettered",
            )
            return runtime

    runtime = asyncio.run(scenario())
    out = read_raw(kafka_bootstrap, invoices, n - 1)
    ids = {InvoiceIssued.model_validate(CODEC.decode_any(m.value())).order_id for m in out}
    assert len(out) == n - 1, "exactly one invoice missing, no duplicates"
    assert ids == {f"o-{i}" for i in range(n)} - {"o-1500"}
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    h = dict(dead.headers())
    assert h["kit-dlt-reason"] == b"delivery"
    assert h["kit-dlt-exception-type"] == b"DeliveryRefused"
    assert invoices.encode() in h["kit-dlt-exception-message"]
    assert dead.value() == CODEC.encode(order(1500))
    assert int(h["kit-dlt-original-partition"]) == 0
    assert runtime.dispatcher.dead_lettered == 1
    assert committed(kafka_bootstrap, group, orders) == end_offsets(kafka_bootstrap, orders)


def test_a_dead_letter_topic_with_fewer_partitions_still_takes_every_dead_letter(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """Defect 1, second reproduction: an existing 1-partition .dlt for 2 input partitions."""
    orders, group = unique_name("orders"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 2)
    create_topic(kafka_bootstrap, f"{orders}.dlt", 1)
    handled: list[str] = []
    svc = Service("strict", group_id=group)

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    rows: list[dict[str, Any]] = [
        {"value": CODEC.encode(order(i)), "partition": i % 2} for i in range(2000)
    ]
    rows.insert(1001, {"value": b"garbage", "partition": 1})
    produce_raw(kafka_bootstrap, orders, rows)
    settings = kit_settings.model_copy(update={"batch_size": 10})

    async def scenario() -> None:
        async with running(svc, settings):
            await wait_until_async(lambda: len(handled) >= 2000, timeout=60, what="2000 orders")

    asyncio.run(scenario())
    assert sorted(handled) == sorted(f"o-{i}" for i in range(2000))
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    assert dead.value() == b"garbage"
    assert dict(dead.headers())["kit-dlt-original-partition"] == b"1"
    assert committed(kafka_bootstrap, group, orders) == end_offsets(kafka_bootstrap, orders)


@pytest.mark.parametrize("existing_dlt", [False, True], ids=["new-dlt", "smaller-dlt"])
def test_an_oversize_undecodable_record_is_dead_lettered_whole(
    existing_dlt: bool,
    kit_settings: Settings,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
) -> None:
    """Defect 2: a 2 MB bad record on a 4 MB topic; the DLT is created to mirror it, and an
    existing smaller DLT is raised to the source's limit."""
    orders, group = unique_name("orders"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 1, **{"max.message.bytes": "4194304"})
    if existing_dlt:
        create_topic(kafka_bootstrap, f"{orders}.dlt", 1)
    handled: list[str] = []
    svc = Service("big", group_id=group)

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    big = b"\x00" * 2_000_000
    rows = [{"value": CODEC.encode(order(i))} for i in range(10)]
    rows.insert(5, {"value": big})
    rows += [{"value": CODEC.encode(order(i))} for i in range(10, 20)]
    produce_big(kafka_bootstrap, orders, rows)

    async def scenario() -> None:
        async with running(svc, kit_settings):
            await wait_until_async(lambda: len(handled) == 20, timeout=60, what="20 orders")

    asyncio.run(scenario())
    assert handled == [f"o-{i}" for i in range(20)]
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    assert dead.value() == big
    assert "kit-dlt-truncated" not in dict(dead.headers())
    assert committed(kafka_bootstrap, group, orders) == {0: 21}


def test_a_dead_letter_the_producer_cannot_send_whole_is_kept_truncated(
    kit_settings: Settings,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 2: with the producer held to 1 MB (KIT_KAFKA_MESSAGE_MAX_BYTES), a 2 MB bad
    record is dead-lettered as a cut copy with its coordinates, not lost or crash-looped."""
    monkeypatch.setenv("KIT_KAFKA_MESSAGE_MAX_BYTES", "1000000")
    orders, group = unique_name("orders"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 1, **{"max.message.bytes": "4194304"})
    handled: list[str] = []
    svc = Service("big", group_id=group)

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    big = bytes(range(256)) * 8000  # 2,048,000 bytes
    produce_big(kafka_bootstrap, orders, [{"value": big}, {"value": CODEC.encode(order(1))}])

    async def scenario() -> None:
        async with running(svc, kit_settings):
            await wait_until_async(lambda: handled == ["o-1"], timeout=60, what="o-1")

    asyncio.run(scenario())
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    h = dict(dead.headers())
    assert h["kit-dlt-truncated"] == str(len(big)).encode()
    assert 0 < len(dead.value()) < 1_000_000 and big.startswith(dead.value())
    assert h["kit-dlt-original-offset"] == b"0" and h["kit-dlt-reason"] == b"decode"
    assert committed(kafka_bootstrap, group, orders) == {0: 2}


def produce_big(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> None:
    """Produce rows in order, one at a time, with records up to 5 MB allowed."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 5_000_000})
    for row in rows:
        producer.produce(topic, **row)
        assert producer.flush(30) == 0


class ThreadRecordingProducer:
    """Wraps a Producer and records which threads serve its delivery callbacks."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def poll(self, timeout: float = 0) -> int:
        self.threads.add(threading.current_thread().name)
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 0) -> int:
        self.threads.add(threading.current_thread().name)
        return int(self._producer.flush(timeout))


def test_delivery_reports_of_the_runtime_producer_run_on_the_event_loop_only(
    kit_settings: Settings, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 5: the announcer published its schema by flushing the runtime's producer from
    a worker thread, so batch accounting ran on two threads at once."""
    import kit.transport.kafka_transport

    made: list[ThreadRecordingProducer] = []
    real = kit.transport.kafka_transport.make_producer

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(ThreadRecordingProducer(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(kit.transport.kafka_transport, "make_producer", recording)
    orders, invoices = unique_name("orders"), unique_name("invoices")
    svc = invoicing(orders, invoices, unique_name("g"))

    async def scenario() -> None:
        async with running(svc, kit_settings) as runtime:
            produce_raw(
                kit_settings.bootstrap_servers or "",
                orders,
                [{"value": CODEC.encode(order(i))} for i in range(200)],
            )
            await wait_until_async(lambda: runtime.dispatcher.handled == 200, what="200")
            assert runtime.announcer is not None
            await wait_until_async(
                lambda: (
                    runtime.announcer is not None
                    and runtime.announcer._schema is not None
                    and runtime.announcer._schema.done()
                ),
                what="the announcer's schema publish",
            )

    asyncio.run(scenario())
    (producer,) = made
    assert producer.threads == {threading.main_thread().name}


def test_a_rebalance_with_offsets_to_store_does_not_stall(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """Defect 6: a revoke arriving while the consumer thread idles in poll, with outputs of
    the last batch still unconfirmed, waited on the loop, while the loop waited in
    store_offsets for the callback: 35 s stalls, then an erroneous state."""
    orders, invoices, group = unique_name("orders"), unique_name("invoices"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 6)
    sent: list[int] = []
    stop_trickle = threading.Event()

    def trickle() -> None:  # a record every few ms: the consumer idles in poll between them
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
        n = 0
        while not stop_trickle.wait(0.005):
            producer.produce(orders, CODEC.encode(order(n)), f"k{n}".encode())
            producer.poll(0)
            sent.append(n)
            n += 1
        assert producer.flush(15) == 0

    async def scenario() -> None:
        feeder = threading.Thread(target=trickle, name="test-trickle")
        async with running(invoicing(orders, invoices, group), kit_settings) as a:
            feeder.start()
            try:
                await wait_until_async(lambda: a.dispatcher.handled >= 100, what="a under way")
                async with running(invoicing(orders, invoices, group), kit_settings) as b:
                    # the stall took 35 s; a rebalance takes well under a second
                    await wait_until_async(
                        lambda: (
                            len(a.assignment) + len(b.assignment) == 6
                            and a.assignment
                            and b.assignment
                        ),
                        timeout=15,
                        what="partitions shared by a and b",
                    )
                    stop_trickle.set()
                    await asyncio.to_thread(feeder.join, 20)
                    await wait_until_async(
                        lambda: a.dispatcher.handled + b.dispatcher.handled >= len(sent),
                        timeout=60,
                        what="every record handled",
                    )
            finally:
                stop_trickle.set()

    asyncio.run(scenario())
    assert committed(kafka_bootstrap, group, orders) == end_offsets(kafka_bootstrap, orders)
    out = read_raw(kafka_bootstrap, invoices, len(sent))
    ids = {InvoiceIssued.model_validate(CODEC.decode_any(m.value())).order_id for m in out}
    assert ids == {f"o-{i}" for i in sent}


def test_a_transient_failure_is_retried_for_its_window_then_dead_lettered(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """Defect 8: transient errors are retried for a time, not 4 attempts in 0.7 s."""
    orders, group = unique_name("orders"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 1)
    calls: dict[str, list[float]] = {}
    svc = Service("flaky-dependency", group_id=group)

    @svc.handler(topic=orders, transient_timeout=1.5)
    async def on_order(event: OrderPlaced) -> None:
        calls.setdefault(event.order_id, []).append(time.monotonic())
        if event.order_id == "o-1" and calls["o-1"][-1] - calls["o-1"][0] < 1.0:
            raise ServiceUnavailable("stock")  # back after 1 s: within the window
        if event.order_id == "o-2":
            raise ServiceUnavailable("stock")  # never back: dead-lettered after 1.5 s

    produce_raw(kafka_bootstrap, orders, [{"value": CODEC.encode(order(i))} for i in (1, 2, 3)])
    settings = kit_settings.model_copy(update={"retry_backoff": 0.05, "retry_backoff_max": 0.2})

    async def scenario() -> Runtime:
        async with running(svc, settings) as runtime:
            await wait_until_async(lambda: "o-3" in calls, timeout=30, what="o-3")
            return runtime

    runtime = asyncio.run(scenario())
    assert len(calls["o-1"]) > 4, "more attempts than the count-based policy allowed"
    assert calls["o-1"][-1] - calls["o-1"][0] >= 1.0
    assert 1.5 <= calls["o-2"][-1] - calls["o-2"][0] < 3.0
    (dead,) = read_raw(kafka_bootstrap, f"{orders}.dlt", 1)
    assert dict(dead.headers())["kit-dlt-exception-type"] == b"ServiceUnavailable"
    assert runtime.dispatcher.dead_lettered == 1


def test_stopping_during_a_transient_retry_commits_nothing_past_the_record(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    orders, group = unique_name("orders"), unique_name("g")
    create_topic(kafka_bootstrap, orders, 1)
    seen: list[str] = []
    svc = Service("down-dependency", group_id=group)

    @svc.handler(topic=orders, transient_timeout=300)
    async def on_order(event: OrderPlaced) -> None:
        seen.append(event.order_id)
        if event.order_id == "o-2":
            raise ServiceUnavailable("stock")

    produce_raw(kafka_bootstrap, orders, [{"value": CODEC.encode(order(i))} for i in (1, 2, 3)])

    async def scenario() -> float:
        async with running(svc, kit_settings) as runtime:
            await wait_until_async(lambda: seen.count("o-2") >= 3, what="o-2 retried")
            stopped = time.monotonic()
            runtime.stop()
        return time.monotonic() - stopped

    took = asyncio.run(scenario())
    assert took < 10, "the retry wait ends at once on stop"
    assert "o-3" not in seen
    assert committed(kafka_bootstrap, group, orders) == {0: 1}, "o-2 is handled again later"
    assert read_raw(kafka_bootstrap, f"{orders}.dlt", 0, timeout=5) == []


def test_a_dependency_restarted_mid_stream_costs_no_dead_letter(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """Defect 8: a graceful restart of a responder made its caller dead-letter an event
    after 4 ServiceUnavailable attempts in about 0.7 s."""
    from tests.fixtures.events import CheckStock, StockLevel
    from tests.integration.test_rpc import inventory

    orders, group, stock = unique_name("orders"), unique_name("g"), unique_name("inv")
    create_topic(kafka_bootstrap, orders, 2)
    stock_service = inventory(stock)
    checked: list[str] = []
    caller = Service("checker", group_id=group)

    @caller.handler(topic=orders)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        level = await ctx.request(
            f"{stock}.check",
            CheckStock(sku="tea", quantity=1, request_id=event.order_id),
            reply=StockLevel,
            timeout=2.0,
        )
        checked.append(level.request_id)

    settings = kit_settings.model_copy(update={"retry_backoff": 0.05, "retry_backoff_max": 0.5})
    total = 400

    async def feed(start: int, stop: int) -> None:
        rows = [
            {"value": CODEC.encode(order(i)), "key": f"k{i}".encode()} for i in range(start, stop)
        ]
        await asyncio.to_thread(produce_raw, kafka_bootstrap, orders, rows)

    async def scenario() -> Runtime:
        async with running(caller, settings) as runtime:
            async with running(stock_service, settings):
                await feed(0, 100)
                await wait_until_async(lambda: len(checked) >= 50, what="calls under way")
                await feed(100, 300)
            # inventory stopped gracefully (tombstone: callers fail fast) mid-stream
            await wait_until_async(
                lambda: any("retrying" in r for r in retry_log), timeout=30, what="a retry"
            )
            await feed(300, total)
            async with running(stock_service, settings):
                await wait_until_async(
                    lambda: len(set(checked)) >= total, timeout=90, what="every order checked"
                )
            return runtime

    retry_log: list[str] = []
    handler = _ListHandler(retry_log)
    logging.getLogger("kit.dispatch").addHandler(handler)
    try:
        runtime = asyncio.run(scenario())
    finally:
        logging.getLogger("kit.dispatch").removeHandler(handler)
    assert set(checked) == {f"o-{i}" for i in range(total)}
    assert runtime.dispatcher.dead_lettered == 0
    assert read_raw(kafka_bootstrap, f"{orders}.dlt", 0, timeout=5) == []
    assert committed(kafka_bootstrap, group, orders) == end_offsets(kafka_bootstrap, orders)


class _ListHandler(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())
