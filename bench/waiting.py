"""Waiting handlers: events/s of a handler that awaits 2 ms per event, on 6 partitions.

A handler that waits (a database call, a request) is bound by its waits, not the CPU: with
6 partitions, kit may wait for 6 records at once (one per partition, each partition in
order), about 3,000 events/s at 2 ms, where handling one record at a time gives ~450.

The run: create a fresh topic with 6 partitions, pre-fill it with N `bench.Reading` events
(a backlog: the case where a fetched batch holds records of one partition only), then run a
kit `Runtime` in this process with `async def handler(event): await asyncio.sleep(0.002)`
and a fresh group, timed from its first handled record to its N-th. Reports events/s, the
most records handled at once, whether each partition kept its order, the offsets the group
committed against the topic's end offsets, and peak RSS. Prints JSON; asserts nothing.

With `--key-concurrency K` the handler is declared `key_concurrency=K`: records of one
partition with different keys (1,000 keys here) overlap, K at a time, in order per key
(`out_of_order` then counts per key).

Run (broker: `kit broker start`; KIT_BOOTSTRAP_SERVERS or the local broker):
    PYTHONPATH=. python -m bench.waiting                    # N=6,000, 2 ms
    PYTHONPATH=. python -m bench.waiting --events 600 --wait-ms 2
    PYTHONPATH=. python -m bench.waiting --events 30000 --key-concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import peak_rss_mb
from bench.pipeline import PARTITIONS, create_topics, delete_topics, prefill
from bench.reading import Reading, records
from kit import Context, Runtime, Service, load_settings
from kit.config import resolve_bootstrap


class Probe:
    """What the handler saw: count, timing, concurrency, order per partition."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.handled = 0
        self.first = self.last = 0.0
        self.active = self.peak = 0
        self.last_offset: dict[object, int] = {}
        self.out_of_order = 0
        self.done = asyncio.Event()


def make_service(
    topic: str, group: str, probe: Probe, wait: float, keys: int | None = None
) -> Service:
    """One handler that waits `wait` seconds per event (as an I/O call would)."""
    svc = Service("bench-waiting", group_id=group)

    @svc.handler(topic=topic, partitions=PARTITIONS, key_concurrency=keys)
    async def on_reading(event: Reading, ctx: Context) -> None:
        if not probe.first:
            probe.first = time.perf_counter()
        probe.active += 1
        probe.peak = max(probe.peak, probe.active)
        try:
            await asyncio.sleep(wait)
        finally:
            probe.active -= 1
        order = (ctx.partition, ctx.key) if keys and keys > 1 else ctx.partition
        if ctx.offset <= probe.last_offset.get(order, -1):
            probe.out_of_order += 1
        probe.last_offset[order] = ctx.offset
        probe.handled += 1
        if probe.handled >= probe.events:
            probe.last = time.perf_counter()
            probe.done.set()

    return svc


def committed(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(offsets the group committed, end offsets), summed over the topic's partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        ends = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return done, ends
    finally:
        consumer.close()


async def run_kit(
    topic: str, group: str, events: int, wait: float, keys: int | None = None
) -> Probe:
    """Run the service until it handled `events` records, then stop it gracefully."""
    probe = Probe(events)
    service = make_service(topic, group, probe, wait, keys)
    runtime = Runtime(service, load_settings(), extensions=[])
    await runtime.start()
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(probe.done.wait(), timeout=max(120.0, events * wait * 2))
    finally:
        runtime.stop()
        await task
    return probe


def main() -> None:
    """Parse arguments, run once, print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--key-concurrency", type=int, default=None)
    args = parser.parse_args()
    bootstrap, _source = resolve_bootstrap(load_settings())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run = uuid.uuid4().hex[:8]
    topic, group = f"bench-waiting-{run}", f"bench-waiting-{run}"
    create_topics(admin, [topic])
    try:
        prefill(bootstrap, topic, records(args.events))
        probe = asyncio.run(
            run_kit(topic, group, args.events, args.wait_ms / 1000, args.key_concurrency)
        )
        done, ends = committed(bootstrap, group, topic)
    finally:
        delete_topics(admin, [topic])
    seconds = probe.last - probe.first
    result: dict[str, Any] = {
        "benchmark": "waiting",
        "events": args.events,
        "wait_ms": args.wait_ms,
        "partitions": PARTITIONS,
        "key_concurrency": args.key_concurrency,
        "handled": probe.handled,
        "seconds": round(seconds, 3),
        "events_per_s": round(args.events / seconds) if seconds > 0 else 0,
        "ideal_events_per_s": round(PARTITIONS * (args.key_concurrency or 1) * 1000 / args.wait_ms),
        "peak_concurrency": probe.peak,
        "out_of_order": probe.out_of_order,
        "committed": done,
        "end_offsets": ends,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
