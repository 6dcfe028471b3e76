"""On a real broker: inventory's stock survives a restart, and orders fails fast without it.

Inventory runs as `kit run services.inventory:service` in a process of its own, which is
stopped and started again; orders' `place_order` runs in this process and is called
through a Client. Only `place_order`: orders' payment handlers, in a new consumer group,
would also handle the payment events other runs left on the shared payments topics.
Likewise inventory may apply `Restocked` events of other runs (other SKUs): the records
counted are those of this test's SKUs and orders.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from kit import Client, Codec, Context, Service, load_settings
from kit.testing.process import OutputLines, spawn_python
from services import inventory, orders
from services.inventory.events import Release, Reserve, StockLine
from services.orders.events import OrderLine, OrderPlaced, OrderResult, PlaceOrder
from tests.integration.helpers import running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOT_REACHED = ("inventory unavailable: ", "inventory did not answer: ")

placing = Service("orders", version="2.0.0")


@placing.responder()
async def place_order(request: PlaceOrder, ctx: Context) -> OrderResult:
    """orders.place_order, the responder of services.orders, alone."""
    return await orders.place_order(request, ctx)


def start_inventory(
    bootstrap: str, env: dict[str, str]
) -> tuple[subprocess.Popen[str], OutputLines]:
    proc = spawn_python(
        ["-m", "kit.cli", "run", "services.inventory:service"],
        env={"PYTHONPATH": str(ROOT), "KIT_BOOTSTRAP_SERVERS": bootstrap, **env},
        cwd=ROOT,
    )
    out = OutputLines(proc)
    try:
        out.wait_for("kit: inventory ready:", timeout=90)
    except TimeoutError:
        proc.kill()
        raise
    return proc, out


def stop_inventory(proc: subprocess.Popen[str], out: OutputLines) -> str:
    proc.terminate()  # SIGTERM: a graceful stop, which tombstones its registration
    assert proc.wait(60) == 0, "".join(out.lines)
    return out.wait_for("inventory stopped:", timeout=5)


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every committed record of `topic`, all partitions, from the start to the end offsets."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + timeout
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in parts}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _high) in ends.items()])
        position = {p: low for p, (low, _high) in ends.items()}
        out: list[Message] = []
        while any(position[p] < ends[p][1] for p in parts):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout}s"
            msg = consumer.poll(0.2)
            if msg is None:  # transaction markers at the end: ask where the consumer is
                for tp in consumer.position([TopicPartition(topic, p) for p in parts]):
                    position[tp.partition] = max(position[tp.partition], tp.offset)
            elif msg.error() is None:
                out.append(msg)
                position[msg.partition()] = msg.offset() + 1
        return out
    finally:
        consumer.close()


async def reached(call: Callable[[], Awaitable[OrderResult]], timeout: float = 60) -> OrderResult:
    """The first result of `call` in which inventory answered (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await call()
        if result.accepted or not (result.reason or "").startswith(NOT_REACHED):
            return result
        assert time.monotonic() < deadline, f"inventory never answered: {result}"
        await asyncio.sleep(0.1)  # the poll's interval: orders' registry view catches up


async def test_stock_survives_a_restart_of_inventory(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_RESERVE_TIMEOUT", "3")
    tea, cake = unique_name("tea"), unique_name("cake")
    state = unique_name("inventory.state")
    env = {
        "KIT_GROUP_ID": unique_name("inventory"),
        "SHOP_INVENTORY_TOPIC": state,
        "SHOP_INITIAL_STOCK": f"{tea}=5,{cake}=2",
    }
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("orders"),
        retry_backoff=0.01,
        retry_backoff_max=0.05,
        shutdown_timeout=20,
    )

    def order(n: int, sku: str, quantity: int) -> Callable[[], Awaitable[OrderResult]]:
        lines = [OrderLine(sku=sku, quantity=quantity, unit_price_cents=100)]
        request = PlaceOrder(order_id=f"{tea}-o{n}", customer="ada", lines=lines)
        return lambda: client.request(orders.place_order, request, timeout=15)

    async def release(n: int) -> bool:
        reply = await client.request(inventory.release, Release(order_id=f"{tea}-o{n}"))
        return reply.released

    async with running(placing, settings), Client(settings, fail_fast=False) as client:
        began = time.monotonic()
        down = await order(0, tea, 1)()  # no inventory is running yet
        assert time.monotonic() - began < 3, "not rejected at once"
        assert not down.accepted and (down.reason or "").startswith("inventory unavailable: ")

        proc, out = await asyncio.to_thread(start_inventory, kafka_bootstrap, env)
        try:
            assert (await reached(order(1, tea, 3))).accepted
            again = Reserve(order_id=f"{tea}-o1", lines=[StockLine(sku=tea, quantity=3)])
            assert (await client.request(inventory.reserve, again)).reserved  # no second hold
            short = await order(2, tea, 3)()
            assert short.reason == f"not enough {tea!r}: 3 wanted, 2 available"
            assert (await order(3, cake, 2)()).accepted
            assert await release(3)
        finally:
            await asyncio.to_thread(stop_inventory, proc, out)

        env["SHOP_INITIAL_STOCK"] = f"{tea}=100"  # ignored: the state topic is not empty
        proc, out = await asyncio.to_thread(start_inventory, kafka_bootstrap, env)
        try:
            loaded = out.wait_for("services.inventory: inventory:")
            assert " SKUs and 1 reservations from " in loaded  # o1's (o3's was released)
            after = await reached(order(4, tea, 3))
            assert after.reason == f"not enough {tea!r}: 3 wanted, 2 available"
            assert (await order(5, tea, 2)()).accepted
            assert (await order(6, tea, 1)()).reason == f"not enough {tea!r}: 1 wanted, 0 available"
            assert [await release(1), await release(3)] == [True, False]
            assert (await order(7, cake, 2)()).accepted  # o3's cake came back before the restart
        finally:
            await asyncio.to_thread(stop_inventory, proc, out)

    records = await asyncio.to_thread(read_all, kafka_bootstrap, state)
    token = tea.rsplit("-", 1)[1]  # in this test's SKUs and order ids, and nowhere else
    keys = [k for m in records if token in (k := m.key().decode())]
    sku, held = (lambda s: f"sku/{s}"), (lambda n: f"order/{tea}-o{n}")
    assert keys == [
        *sorted([sku(tea), sku(cake)]),  # the seed, once
        *[sku(tea), held(1)],
        *[sku(cake), held(3)],
        *[sku(cake), held(3)],  # released: the stock, and a tombstone
        *[sku(tea), held(5)],  # after the restart
        *[sku(tea), held(1)],
        *[sku(cake), held(7)],
    ]
    assert [m.value() is None for m in records if token in m.key().decode()].count(True) == 2
    placed = await asyncio.to_thread(read_all, kafka_bootstrap, "orders.OrderPlaced")
    codec = Codec()
    ours = [
        codec.decode(m.value(), OrderPlaced)
        for m in placed
        if m.key() and m.key().decode().startswith(f"{tea}-o")
    ]
    totals = sorted((p.order_id, p.total_cents) for p in ours)
    assert totals == [
        (f"{tea}-o1", 300),
        (f"{tea}-o3", 200),
        (f"{tea}-o5", 200),
        (f"{tea}-o7", 200),
    ]
