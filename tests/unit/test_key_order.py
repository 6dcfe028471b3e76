"""Per-key ordering (`@service.handler(key_concurrency=N)`, kit.lanes.handle_by_key) on the
memory transport: different keys of one partition overlap, at most N at a time, each key
keeps its order, and offsets are stored only below the lowest record not handled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kit import Service
from kit.context import Context
from kit.errors import ConfigError, ServiceUnavailable
from kit.runtime import Runtime
from kit.testing.harness import Harness
from kit.testing.wait import wait_until_async
from kit.transport.memory import MemoryConsumer
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order
from tests.unit.test_lanes import _settings, _stop

TOPIC = "keys.orders"
KEYS = 4

Handle = Callable[[bytes, int], Awaitable[None]]


def _harness(
    handle: Handle,
    records: int,
    key_concurrency: int,
    keys: list[bytes | None] | None = None,
    **settings: object,
) -> Harness:
    """One partition of `records` orders keyed k0..k3 in turn (or `keys`, one per record);
    the handler awaits `handle(key, offset)`."""
    svc = Service("keys")

    @svc.handler(topic=TOPIC, partitions=1, key_concurrency=key_concurrency)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        await handle(ctx.key or b"", ctx.offset)

    h = Harness(svc, settings=_settings(**settings), partitions=1)
    chosen = keys or [f"k{n % KEYS}".encode() for n in range(records)]
    for n, key in enumerate(chosen):
        h.broker.append(TOPIC, h.codec.encode(order(n)), key, partition=0)
    return h


async def _running(h: Harness) -> tuple[Runtime, MemoryConsumer, asyncio.Task[None]]:
    await h.start()
    runtime = h.runtimes["keys"]
    return runtime, h.transports["keys"].consumer, asyncio.create_task(runtime.run())


def _per_key(seen: list[tuple[bytes, int]]) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = {}
    for key, offset in seen:
        out.setdefault(key, []).append(offset)
    return out


@pytest.mark.parametrize("limit", [KEYS, 2])
def test_keys_of_one_partition_overlap_up_to_the_limit_each_in_order(limit: int) -> None:
    seen: list[tuple[bytes, int]] = []
    active = peak = 0
    together = asyncio.Event()

    async def handle(key: bytes, offset: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == limit:
            together.set()
        await asyncio.wait_for(together.wait(), 10)  # the first `limit` keys run at once
        await asyncio.sleep(0)
        seen.append((key, offset))
        active -= 1

    async def main() -> None:
        h = _harness(handle, records=40, key_concurrency=limit, batch_size=16)
        runtime, consumer, task = await _running(h)
        await wait_until_async(lambda: len(seen) == 40, what="every record handled")
        await _stop(runtime, task)
        assert peak == limit  # overlapped, and never more than the limit
        assert _per_key(seen) == {f"k{k}".encode(): list(range(k, 40, KEYS)) for k in range(KEYS)}
        assert consumer.committed == {(TOPIC, 0): 40}
        assert runtime.dispatcher.handled == 40 and runtime.in_flight == 0

    asyncio.run(main())


def test_offsets_stay_below_a_key_still_running_while_other_keys_go_on() -> None:
    gate = asyncio.Event()
    seen: list[tuple[bytes, int]] = []

    async def handle(key: bytes, offset: int) -> None:
        if offset == 1:  # k1's first record waits
            await asyncio.wait_for(gate.wait(), 10)
        seen.append((key, offset))

    async def main() -> None:
        h = _harness(handle, records=8, key_concurrency=KEYS, batch_size=8)
        runtime, consumer, task = await _running(h)
        stored: list[dict[tuple[str, int], int]] = []
        store = consumer._store

        def watched() -> None:
            store()
            stored.append(dict(consumer.committed))

        consumer._store = watched  # type: ignore[method-assign]
        # every other key finishes, k1's second record (offset 5) waits behind offset 1
        await wait_until_async(lambda: len(seen) == 6, what="the other keys handled")
        assert sorted(o for _k, o in seen) == [0, 2, 3, 4, 6, 7]
        await wait_until_async(lambda: len(stored) >= 3, what="the loop storing offsets")
        assert all(s.get((TOPIC, 0), 0) <= 1 for s in stored)  # never past offset 1
        gate.set()
        await wait_until_async(lambda: len(seen) == 8, what="k1 handled")
        await _stop(runtime, task)
        assert _per_key(seen)[b"k1"] == [1, 5]
        assert consumer.committed == {(TOPIC, 0): 8}

    asyncio.run(main())


def test_a_stop_leaves_the_lowest_unfinished_record_to_be_fetched_again() -> None:
    started = asyncio.Event()
    handled: list[int] = []

    async def handle(key: bytes, offset: int) -> None:
        if offset == 2:
            started.set()
            await asyncio.sleep(30)  # still running at the stop: cancelled after the deadline
        handled.append(offset)

    async def main() -> None:
        h = _harness(handle, records=8, key_concurrency=KEYS, batch_size=8)
        runtime, consumer, task = await _running(h)
        # records 3, 4, 5 and 7 (other keys) are handled; 6 (k2) waits behind 2
        runtime.settings = runtime.settings.model_copy(update={"shutdown_timeout": 0.2})
        await asyncio.wait_for(started.wait(), 10)
        await wait_until_async(lambda: len(handled) == 6, what="the other keys handled")
        await _stop(runtime, task)
        assert sorted(handled) == [0, 1, 3, 4, 5, 7]
        assert consumer.committed.get((TOPIC, 0), 0) == 2  # 2 (and 3-7 after it) redone

    asyncio.run(main())


@pytest.mark.parametrize("bad", [0, -2, True, 2.5, "4"])
def test_a_key_concurrency_that_is_not_an_int_of_at_least_one_is_refused(bad: object) -> None:
    svc = Service("keys")
    with pytest.raises(ConfigError) as caught:

        @svc.handler(topic=TOPIC, key_concurrency=bad)  # type: ignore[arg-type]
        async def on_order(event: OrderPlaced) -> None:
            pass

    assert caught.value.setting == "key_concurrency"


def test_a_key_still_running_counts_for_the_liveness_check_while_other_keys_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kit import telemetry

    monkeypatch.setattr(telemetry.active, "timed", True)  # as with KIT_METRICS_PORT set
    gate = asyncio.Event()
    seen: list[int] = []

    async def handle(key: bytes, offset: int) -> None:
        if offset == 1:
            await asyncio.wait_for(gate.wait(), 10)
        seen.append(offset)

    async def main() -> None:
        h = _harness(handle, records=8, key_concurrency=KEYS, batch_size=8)
        runtime, _consumer, task = await _running(h)
        await wait_until_async(lambda: len(seen) == 6, what="the other keys handled")
        assert runtime.stats.stuck_for() > 0  # offset 1's call is still running
        gate.set()
        await wait_until_async(lambda: len(seen) == 8, what="k1 handled")
        assert runtime.stats.stuck_for() == 0
        await _stop(runtime, task)

    asyncio.run(main())


def test_records_without_a_key_share_one_order() -> None:
    seen: list[tuple[bytes, int]] = []

    async def handle(key: bytes, offset: int) -> None:
        await asyncio.sleep(0.001 * (6 - offset))  # later records would finish first
        seen.append((key, offset))

    async def main() -> None:
        keys: list[bytes | None] = [None, b"x", None, b"x", None, b"y"]
        h = _harness(handle, records=6, key_concurrency=KEYS, keys=keys, batch_size=6)
        runtime, consumer, task = await _running(h)
        await wait_until_async(lambda: len(seen) == 6, what="every record handled")
        await _stop(runtime, task)
        assert _per_key(seen) == {b"": [0, 2, 4], b"x": [1, 3], b"y": [5]}
        assert consumer.committed == {(TOPIC, 0): 6}

    asyncio.run(main())


def test_a_record_given_up_at_a_stop_holds_the_offsets_and_waiting_keys_do_not_start() -> None:
    seen: list[int] = []
    blocked, release = asyncio.Event(), asyncio.Event()

    async def handle(key: bytes, offset: int) -> None:
        if offset == 0:
            raise ServiceUnavailable("stock")  # transient: retried until the stop
        if offset == 1:
            blocked.set()
            await asyncio.wait_for(release.wait(), 10)  # finishes after the stop
        seen.append(offset)

    async def main() -> None:
        h = _harness(
            handle,
            records=8,
            key_concurrency=2,
            batch_size=8,
            retry_backoff=5.0,
            retry_backoff_max=5.0,
            transient_timeout=60.0,
        )
        runtime, consumer, task = await _running(h)
        await asyncio.wait_for(blocked.wait(), 10)  # k0 retrying, k1 running: no room left
        runtime.stop()
        release.set()
        await asyncio.wait_for(task, 10)
        assert seen == [1, 5]  # k1 finished what it had begun; k2 and k3 were not started
        assert consumer.committed.get((TOPIC, 0), 0) == 0  # offset 0 is fetched again

    asyncio.run(main())


def test_a_key_whose_handling_fails_stops_the_runtime_without_storing_past_it() -> None:
    seen: list[int] = []

    async def handle(key: bytes, offset: int) -> None:
        seen.append(offset)

    async def main() -> None:
        h = _harness(handle, records=8, key_concurrency=KEYS, batch_size=8)
        runtime, consumer, task = await _running(h)
        real = runtime.dispatcher.handle_partition

        async def broken(records, ticket, offsets=None):  # type: ignore[no-untyped-def]
            if records[0].offset() == 2:  # k2: a bug outside the handler (not retried)
                raise RuntimeError("bug in the k2 path")
            await real(records, ticket, offsets)

        runtime.dispatcher.handle_partition = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="bug in the k2 path"):
            await asyncio.wait_for(task, 10)
        assert consumer.committed.get((TOPIC, 0), 0) <= 2

    asyncio.run(main())
