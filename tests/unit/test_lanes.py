"""Partition lanes (kit.lanes) on the memory transport: partitions overlap, each keeps its
order, offsets stop below the first unfinished record, in-flight work is bounded, and
stop, close and revoke finish or abandon what is in hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kit import Service
from kit.commits import Commits, SlotTicket
from kit.config import load_settings
from kit.context import Context, Ticket
from kit.runtime import Runtime
from kit.testing.harness import Harness
from kit.testing.wait import wait_until_async
from kit.transport.memory import MemoryConsumer
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order

TOPIC = "lanes.orders"
PARTS = 3


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    values = {
        "bootstrap_servers": "memory",
        "retry_backoff": 0.0,
        "retry_backoff_max": 0.0,
        "transient_timeout": 0.0,
        **overrides,
    }
    return load_settings(**values)


Handler = Callable[[int, int], Awaitable[None]]


def _harness(handle: Handler, per_partition: int, **settings: object) -> Harness:
    """A service whose handler awaits `handle(partition, offset)`, and `per_partition`
    orders waiting on each of PARTS partitions."""
    svc = Service("lanes")

    @svc.handler(topic=TOPIC, partitions=PARTS)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        await handle(ctx.partition, ctx.offset)

    h = Harness(svc, settings=_settings(**settings), partitions=PARTS)
    for n in range(per_partition):
        for p in range(PARTS):
            h.broker.append(TOPIC, h.codec.encode(order(n)), f"k{p}".encode(), partition=p)
    return h


def _ends(h: Harness) -> dict[tuple[str, int], int]:
    return {(TOPIC, p): len(records) for p, records in enumerate(h.broker.topics[TOPIC])}


async def _running(h: Harness) -> tuple[Runtime, MemoryConsumer, asyncio.Task[None]]:
    await h.start()
    runtime = h.runtimes["lanes"]
    return runtime, h.transports["lanes"].consumer, asyncio.create_task(runtime.run())


async def _stop(runtime: Runtime, task: asyncio.Task[None]) -> None:
    runtime.stop()
    await asyncio.wait_for(task, 10)


def test_partitions_overlap_and_each_keeps_its_order() -> None:
    seen: list[tuple[int, int]] = []
    active = peak = 0
    all_in = asyncio.Event()

    async def handle(partition: int, offset: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == PARTS:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)  # the first record of each, together
        seen.append((partition, offset))
        active -= 1

    async def main() -> None:
        h = _harness(handle, per_partition=20, batch_size=7)
        runtime, consumer, task = await _running(h)
        await wait_until_async(lambda: len(seen) == 20 * PARTS, what="every record handled")
        await _stop(runtime, task)
        assert peak == PARTS  # every partition was being handled at once
        for p in range(PARTS):
            assert [o for q, o in seen if q == p] == list(range(20))
        assert consumer.committed == _ends(h)
        assert runtime.dispatcher.handled == 20 * PARTS and runtime.in_flight == 0
        assert not runtime.lanes.lanes  # no lane task left

    asyncio.run(main())


def test_an_unfinished_record_holds_its_partitions_offsets_only() -> None:
    gate = asyncio.Event()
    handled: list[tuple[int, int]] = []

    async def handle(partition: int, offset: int) -> None:
        if (partition, offset) == (0, 1):
            await asyncio.wait_for(gate.wait(), 10)
        handled.append((partition, offset))

    async def main() -> None:
        h = _harness(handle, per_partition=10, batch_size=4)
        runtime, consumer, task = await _running(h)
        stored: list[dict[tuple[str, int], int]] = []
        store = consumer._store

        def watched() -> None:
            store()
            stored.append(dict(consumer.committed))

        consumer._store = watched  # type: ignore[method-assign]
        ends = _ends(h)
        others = {slot: end for slot, end in ends.items() if slot[1] != 0}

        def others_committed() -> bool:
            return all(consumer.committed.get(s) == e for s, e in others.items())

        await wait_until_async(others_committed, what="partitions 1 and 2 committed")
        assert [o for p, o in handled if p == 0] == [0]  # partition 0 waits behind offset 1
        assert all(s.get((TOPIC, 0), 0) <= 1 for s in stored)  # never past offset 1
        gate.set()
        await wait_until_async(lambda: len(handled) == 10 * PARTS, what="the rest handled")
        await _stop(runtime, task)
        assert consumer.committed == ends
        assert [o for p, o in handled if p == 0] == list(range(10))

    asyncio.run(main())


def test_records_in_flight_are_bounded_and_a_backed_up_partition_is_paused() -> None:
    gate = asyncio.Event()

    async def handle(partition: int, offset: int) -> None:
        await asyncio.wait_for(gate.wait(), 10)

    async def main() -> None:
        h = _harness(handle, per_partition=30, batch_size=4)
        runtime, consumer, task = await _running(h)
        lanes = runtime.lanes
        lanes.max_records = 12
        polls = 0
        poll = runtime.transport.poll

        def counted(timeout: float) -> int:
            nonlocal polls
            polls += 1
            return poll(timeout)

        runtime.transport.poll = counted  # type: ignore[method-assign]
        # partition 0 has a batch waiting behind the one in hand: paused, so that the next
        # fetch brings partition 1; then the loop waits for room
        await wait_until_async(lambda: (TOPIC, 0) in consumer.paused, what="partition 0 paused")
        await wait_until_async(lambda: lanes.unsettled() >= 12, what="the bound reached")
        seen = polls
        await wait_until_async(lambda: polls > seen + 50, what="the loop waiting for room")
        fetched = sum(consumer.positions.values())
        committed = sum(consumer.committed.values()) + sum(runtime.commits.take().values())
        assert lanes.unsettled() <= 12 + 4 - 1
        assert fetched - committed <= 12 + 4 - 1
        assert runtime.in_flight == lanes.unsettled()
        gate.set()
        await wait_until_async(lambda: runtime.dispatcher.handled == 30 * PARTS, what="all")
        await wait_until_async(lambda: not consumer.paused, what="partition 0 resumed")
        await _stop(runtime, task)
        assert consumer.committed == _ends(h)

    asyncio.run(main())


def test_stop_finishes_the_record_in_hand_and_drops_what_waits() -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    handled: list[tuple[int, int]] = []

    async def handle(partition: int, offset: int) -> None:
        if (partition, offset) == (0, 2):
            started.set()
            await asyncio.wait_for(gate.wait(), 10)
        handled.append((partition, offset))

    async def main() -> None:
        h = _harness(handle, per_partition=10, batch_size=3)
        runtime, consumer, task = await _running(h)
        await asyncio.wait_for(started.wait(), 10)
        runtime.stop()
        await wait_until_async(lambda: runtime.lanes.lanes.get((TOPIC, 0)) is not None)
        gate.set()
        await asyncio.wait_for(task, 10)
        done0 = [o for p, o in handled if p == 0]
        assert done0[:3] == [0, 1, 2] and done0 == list(range(len(done0)))
        # the share being handled (offsets 0-2) is finished; nothing past it is stored
        assert consumer.committed[(TOPIC, 0)] == len(done0) == 3
        for p in range(1, PARTS):
            assert consumer.committed.get((TOPIC, p), 0) == len([o for q, o in handled if q == p])
        assert not runtime.lanes.lanes

    asyncio.run(main())


def test_close_abandons_a_record_that_outlives_the_deadline() -> None:
    started = asyncio.Event()

    async def handle(partition: int, offset: int) -> None:
        if (partition, offset) == (0, 1):
            started.set()
            await asyncio.Event().wait()  # never finishes: cancelled at the deadline

    async def main() -> None:
        h = _harness(handle, per_partition=5, batch_size=5, shutdown_timeout=0.2)
        runtime, consumer, task = await _running(h)
        await asyncio.wait_for(started.wait(), 10)
        await _stop(runtime, task)
        assert consumer.committed[(TOPIC, 0)] == 1  # below the abandoned record
        assert not runtime.lanes.lanes

    asyncio.run(main())


def test_a_revoke_finishes_its_partitions_lanes_and_settles_their_offsets() -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    handled: list[tuple[int, int]] = []

    async def handle(partition: int, offset: int) -> None:
        if (partition, offset) == (0, 0):
            started.set()
            await asyncio.wait_for(gate.wait(), 10)
        handled.append((partition, offset))

    async def main() -> None:
        h = _harness(handle, per_partition=12, batch_size=2)
        await h.start()
        runtime = h.runtimes["lanes"]
        consumer = h.transports["lanes"].consumer
        runtime.lanes.submit(await consumer.fetch())  # partition 0: offsets 0 and 1
        for _ in range(2):  # more of partition 0 (and then of the others) waits behind
            consumer.only = None
            runtime.lanes.submit(await consumer.fetch())
        await asyncio.wait_for(started.wait(), 10)
        revoke = asyncio.create_task(runtime.settle(5.0, {(TOPIC, 0)}))
        await wait_until_async(lambda: not runtime.lanes.lanes[(TOPIC, 0)].queue)
        gate.set()
        await asyncio.wait_for(revoke, 10)
        # the share in hand (offsets 0, 1) finished; what waited was dropped, not handled
        assert [o for p, o in handled if p == 0] == [0, 1]
        assert runtime.take().get((TOPIC, 0)) == 2
        await runtime.lanes.close(5.0)
        await runtime.close()

    asyncio.run(main())


def test_a_slot_ticket_waits_only_for_older_tickets_of_its_partition() -> None:
    class _Dispatcher:
        pass  # read only when a ticket dropped a reply: none does here

    commits = Commits(_settings(), _Dispatcher(), None, lambda _t: 0)  # type: ignore[arg-type]
    a0, b0, a1 = SlotTicket(("t", 0), 1), SlotTicket(("t", 1), 1), SlotTicket(("t", 0), 1)
    commits.tickets.extend([a0, b0, a1])
    for ticket, end in ((a0, 1), (b0, 1), (a1, 2)):
        ticket.offsets[ticket.slot] = end
    b0.closed = a1.closed = True
    assert commits.drain() is None
    assert commits.take() == {("t", 1): 1}  # b0 went; a1 waits for a0
    a0.closed = True
    commits.drain()
    assert commits.take() == {("t", 0): 2} and not commits.tickets
    whole, c0 = Ticket(1), SlotTicket(("t", 1), 1)  # a whole batch holds every later one
    commits.tickets.extend([whole, c0])
    c0.closed = True
    c0.offsets[("t", 1)] = 2
    commits.drain()
    assert commits.take() == {} and len(commits.tickets) == 2


def test_a_retry_abandoned_at_stop_stores_nothing_past_it_in_its_partition() -> None:
    failing = asyncio.Event()

    async def handle(partition: int, offset: int) -> None:
        if (partition, offset) == (0, 1):
            failing.set()
            raise RuntimeError("down")  # retried after a long backoff: abandoned at stop

    async def main() -> None:
        h = _harness(handle, per_partition=6, batch_size=2, retry_backoff=30.0, retries=5)
        runtime, consumer, task = await _running(h)
        await asyncio.wait_for(failing.wait(), 10)
        await wait_until_async(lambda: (TOPIC, 0) in runtime.lanes.lanes)
        await _stop(runtime, task)
        assert consumer.committed[(TOPIC, 0)] == 1  # below the abandoned record
        assert runtime.dispatcher.dead_lettered == 0
        assert not runtime.lanes.lanes

    asyncio.run(main())
