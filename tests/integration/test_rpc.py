"""Request-reply on a real broker: typed calls, errors, deadlines, concurrency, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from kit import (
    Client,
    Context,
    DeliveryError,
    RemoteError,
    RequestTimeout,
    Service,
    ServiceUnavailable,
    Settings,
)
from kit.testing.wait import wait_until_async
from tests.fixtures.events import CheckStock, OrderChecked, OrderLine, OrderPlaced, StockLevel
from tests.integration.helpers import order, read_raw, running
from tests.integration.test_reliability import create_topic

pytestmark = pytest.mark.integration


def inventory(name: str, label: str = "", delay: float = 0.0) -> Service:
    """An inventory service whose responder lives at `<name>.check`."""
    svc = Service(name)

    @svc.responder(partitions=4)
    async def check(request: CheckStock) -> StockLevel:
        if delay:
            await asyncio.sleep(delay)
        if request.sku == "boom":
            raise KeyError(f"unknown sku {request.sku!r}")
        return StockLevel(
            sku=request.sku,
            available=10,
            enough=request.quantity <= 10,
            request_id=request.request_id,
            served_by=label,
        )

    return svc


def test_typed_request_reply_and_remote_error(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("inv")
    svc = inventory(name)
    check = svc.handlers[0].func

    async def scenario() -> None:
        async with running(svc, kit_settings), Client(kit_settings) as client:
            level = await client.request(check, CheckStock(sku="tea", quantity=3))
            assert isinstance(level, StockLevel) and level.enough and level.available == 10
            by_name = await client.request(
                f"{name}.check", CheckStock(sku="tea", quantity=30), reply=StockLevel
            )
            assert by_name.enough is False
            with pytest.raises(RemoteError) as info:
                await client.request(check, CheckStock(sku="boom", quantity=1))
            err = info.value
            assert (err.service, err.method, err.error_type) == (name, "check", "KeyError")
            assert "unknown sku 'boom'" in err.message
            assert err.remote_traceback is None, "no stack trace crosses the wire by default"
            assert client.requester.pending == {}

    asyncio.run(scenario())


def test_a_reply_too_large_for_its_topic_fails_the_call_at_once(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """The broker (or librdkafka) refuses a reply for good: the caller gets a RemoteError
    saying so at once, not a RequestTimeout at its deadline; the responder goes on."""
    name = unique_name("big")
    svc = Service(name)

    @svc.responder()
    async def check(request: CheckStock) -> StockLevel:
        sku = "x" * 2_000_000 if request.sku == "huge" else request.sku
        return StockLevel(sku=sku, available=1, enough=True, request_id=request.request_id)

    async def scenario() -> None:
        async with running(svc, kit_settings) as runtime, Client(kit_settings) as client:
            started = time.monotonic()
            with pytest.raises(RemoteError) as info:
                await client.request(check, CheckStock(sku="huge", quantity=1), timeout=30)
            assert time.monotonic() - started < 10, "waited out the deadline instead"
            err = info.value
            assert (err.service, err.method, err.error_type) == (name, "check", "DeliveryRefused")
            assert "reply of 20000" in err.message and "refused" in err.message, err.message
            level = await client.request(check, CheckStock(sku="tea", quantity=1), timeout=30)
            assert level.sku == "tea"
            replies = runtime.dispatcher.replies
            await wait_until_async(lambda: replies.dropped == 1, timeout=10, what="counted")

    asyncio.run(scenario())


def test_a_request_the_broker_refuses_fails_its_call_at_once(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    """A request larger than its topic takes fails with DeliveryError when the producer's
    report comes back, not with RequestTimeout at the deadline, whether it is sent alone
    or among calls in flight; the calls in flight are answered."""
    name = unique_name("small")
    create_topic(kafka_bootstrap, f"{name}.check", 1, **{"max.message.bytes": "100000"})
    svc = Service(name)
    answer = asyncio.Event()  # held back: the other calls stay in flight

    @svc.responder(partitions=1)
    async def check(request: CheckStock) -> StockLevel:
        await answer.wait()
        return StockLevel(sku=request.sku, available=1, enough=True)

    async def refused(client: Client) -> float:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="request not sent"):
            await client.request(check, CheckStock(sku="x" * 200_000, quantity=1), timeout=30)
        return time.monotonic() - started

    async def scenario() -> None:
        async with running(svc, kit_settings), Client(kit_settings) as client:
            assert await refused(client) < 10, "waited out the deadline instead (alone)"
            calls = [
                client.request(check, CheckStock(sku=f"s{i}", quantity=1), timeout=30)
                for i in range(20)
            ]
            in_flight = asyncio.gather(*calls)
            await wait_until_async(lambda: len(client.requester.pending) == 20, timeout=10)
            took = await refused(client)
            assert took < 10, "waited out the deadline instead (among calls in flight)"
            answer.set()
            assert [r.sku for r in await in_flight] == [f"s{i}" for i in range(20)]
            assert client.requester.pending == {}

    asyncio.run(scenario())


def test_service_unavailable_at_once_when_no_instance_is_registered(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("nobody")

    async def scenario() -> None:
        async with Client(kit_settings, fail_fast=True) as client:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as info:
                await client.request(
                    f"{name}.check", CheckStock(sku="t", quantity=1), reply=StockLevel, timeout=30
                )
            assert info.value.service == name
            assert time.monotonic() - started < 10, "waited out the deadline instead"
            # ...and a responder that has just started is found (read-your-writes)
            async with running(inventory(name), kit_settings):
                level = await client.request(
                    f"{name}.check", CheckStock(sku="t", quantity=1), reply=StockLevel, timeout=30
                )
                assert level.available == 10

    asyncio.run(scenario())


def test_timeout_when_responder_is_down(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("down")

    async def scenario() -> None:
        async with Client(kit_settings, fail_fast=False) as client:
            await client.requester.start()
            await client.ensure_schema(CheckStock.kit_schema())  # one-time set-up, not the wait
            started = time.monotonic()
            with pytest.raises(RequestTimeout) as info:
                await client.request(
                    f"{name}.check",
                    CheckStock(sku="tea", quantity=1),
                    reply=StockLevel,
                    timeout=1.0,
                )
            waited = time.monotonic() - started
            assert 1.0 <= waited < 3.0  # the deadline, not the 10 s default
            err = info.value
            assert (err.service, err.method) == (name, "check")
            assert err.correlation_id and err.waited >= 1.0
            assert name in str(err) and err.correlation_id in str(err)
            assert client.requester.pending == {}

    asyncio.run(scenario())


def test_expired_requests_are_skipped_and_late_replies_dropped(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name, group = unique_name("late"), unique_name("g")

    def slow() -> Service:
        svc = inventory(name, delay=3.0)
        svc.group_id = group
        return svc

    def ask(client: Client, timeout: float, rid: str | None = None) -> Any:
        return client.request(
            f"{name}.check",
            CheckStock(sku="tea", quantity=1, request_id=rid),
            reply=StockLevel,
            timeout=timeout,
        )

    async def scenario() -> None:
        async with Client(kit_settings, fail_fast=False) as client:
            async with running(slow(), kit_settings):
                await ask(client, 10)  # warm: topics exist, schemas known, group committed
            # a backlog of requests whose deadline passes while the responder is down
            results = await asyncio.gather(
                *(ask(client, 0.3) for _ in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, RequestTimeout) for r in results), results
            async with running(slow(), kit_settings) as rt:
                await wait_until_async(lambda: rt.dispatcher.expired == 5, what="backlog skipped")
                assert rt.dispatcher.handled == 0, "expired requests did work"
                assert client.requester.late_replies == 0
                # a reply that arrives after its deadline is dropped and counted
                with pytest.raises(RequestTimeout):
                    await ask(client, 1.5)  # reaches the responder in time, answered 1.5 s late
                await wait_until_async(
                    lambda: client.requester.late_replies == 1, what="the late reply"
                )
                fresh = await ask(client, 10, "fresh")
                assert fresh.request_id == "fresh", "a late reply reached a later request"
                assert client.requester.pending == {}

    asyncio.run(scenario())


def test_two_requesters_two_responders_1000_concurrent_each(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("busy")
    group = unique_name("g")
    a, b = inventory(name, "a"), inventory(name, "b")
    a.group_id = b.group_id = group

    async def caller(client: Client, who: str) -> list[tuple[str, StockLevel]]:
        async def one(i: int) -> tuple[str, StockLevel]:
            rid = f"{who}-{i}"
            level = await client.request(
                f"{name}.check",
                CheckStock(sku=f"sku{i}", quantity=i % 20, request_id=rid),
                reply=StockLevel,
                timeout=60,
            )
            return rid, level

        return await asyncio.gather(*(one(i) for i in range(1000)))

    async def scenario() -> None:
        async with running(a, kit_settings) as ra, running(b, kit_settings) as rb:
            # b is ready at its first assignment, which may be empty (cooperative rebalancing
            # hands it partitions in a second round): flood only once both own some.
            await wait_until_async(lambda: ra.assignment and rb.assignment, timeout=30)
            async with Client(kit_settings) as c1, Client(kit_settings) as c2:
                r1, r2 = await asyncio.gather(caller(c1, "c1"), caller(c2, "c2"))
                for rid, level in [*r1, *r2]:
                    i = int(rid.split("-")[1])
                    assert level.request_id == rid and level.sku == f"sku{i}"
                    assert level.enough == (i % 20 <= 10)
                served = {level.served_by for _rid, level in [*r1, *r2]}
                assert served == {"a", "b"}, "both responder instances should share the load"
                assert c1.requester.pending == {} and c2.requester.pending == {}
                assert c1.requester.late_replies == 0 and c2.requester.late_replies == 0

    asyncio.run(scenario())


def test_requests_succeed_after_responder_restart(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("restart")
    group = unique_name("g")

    async def scenario() -> None:
        async with Client(kit_settings) as client:
            for label in ("first", "second"):
                svc = inventory(name, label)
                svc.group_id = group
                async with running(svc, kit_settings):
                    for i in range(5):
                        level = await client.request(
                            f"{name}.check",
                            CheckStock(sku="tea", quantity=i),
                            reply=StockLevel,
                            timeout=10,
                        )
                        assert level.served_by == label

    asyncio.run(scenario())


def test_undecodable_request_is_dead_lettered_and_caller_gets_remote_error(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    name = unique_name("garbage")

    async def scenario() -> None:
        async with running(inventory(name), kit_settings), Client(kit_settings) as client:
            with pytest.raises(RemoteError) as info:
                await client.requester.request_raw(name, "check", b"\x01garbage", timeout=10)
            assert info.value.error_type == "DecodeError"
            assert "magic" in info.value.message

    asyncio.run(scenario())
    (dead,) = read_raw(kafka_bootstrap, f"{name}.check.dlt", 1)
    assert dead.value() == b"\x01garbage"
    assert dict(dead.headers())["kit-dlt-reason"] == b"decode"


def test_handler_makes_a_request_inside_an_event_flow(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name, orders, checked = unique_name("stock"), unique_name("orders"), unique_name("checked")
    responder = inventory(name)
    svc = Service("orders-test", group_id=unique_name("g"))

    @svc.handler(topic=orders)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        line = event.lines[0]
        level = await ctx.request(
            f"{name}.check",
            CheckStock(sku=line.sku, quantity=line.quantity),
            reply=StockLevel,
            timeout=10,
        )
        ctx.publish(
            OrderChecked(order_id=event.order_id, accepted=level.enough),
            key=event.order_id,
            topic=checked,
        )

    async def scenario() -> list[OrderChecked]:
        async with running(responder, kit_settings), running(svc, kit_settings):
            async with Client(kit_settings) as client:
                big = order(2).model_copy(
                    update={"lines": [OrderLine(sku="tea", quantity=50, unit_price_cents=1)]}
                )
                await client.publish(order(1), key="o-1", topic=orders)
                await client.publish(big, key="o-2", topic=orders)
                stream = client.consume(checked, OrderChecked, limit=2, timeout=30)
                return [e async for _m, e in stream]

    results = {e.order_id: e.accepted for e in asyncio.run(scenario())}
    assert results == {"o-1": True, "o-2": False}
