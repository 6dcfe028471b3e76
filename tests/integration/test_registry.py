"""Service discovery on a real broker: announce, visibility, stop, kill -9, compaction, cleaners.

Run as a program, this module is also the child service process the tests start and kill
(`python -m tests.integration.test_registry child ...`), and a benchmark
(`python -m tests.integration.test_registry bench`, prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import statistics
import sys
import threading
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kit import Codec, Context, Runtime, Service, Settings, load_settings
from kit.registry import Announcer, Registration, Registry, RegistryEvent, registry_topic_spec
from kit.registry.model import (
    HEADER_CLEANER,
    HEADER_HEARTBEAT,
    HEADER_REASON,
    REPOSITORY,
    endpoints_of,
    from_ms,
    now_ms,
)
from kit.testing.process import OutputLines, spawn_python
from kit.testing.wait import wait_until_async
from kit.transport.admin import ensure_topics
from kit.transport.kafka import admin_client, make_producer
from tests.fixtures.events import InvoiceIssued, OrderPlaced

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# Aggressive compaction, so tests can watch the log cleaner work (its backoff is 1 s).
COMPACT_FAST = (
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("delete.retention.ms", "100"),
)


# --- helpers ------------------------------------------------------------------------------


def make_service(name: str, topic: str, *, responder: bool = False, group: str = "") -> Service:
    """A small service with one handler (and a responder if asked)."""
    svc = Service(name, version="1.4.2", group_id=group or None, metadata={"team": "t"})

    @svc.handler(topic=topic)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        pass

    if responder:

        @svc.responder(topic=f"{topic}.quote")
        async def quote(event: OrderPlaced) -> InvoiceIssued:
            raise NotImplementedError

    return svc


@dataclass
class RawRecord:
    offset: int
    key: str
    value: bytes | None
    headers: dict[str, bytes]


def read_all(settings: Settings, topic: str, timeout: float = 20.0) -> list[RawRecord]:
    """Every record of the (one-partition) topic from its start to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[RawRecord] = []
        position = 0
        deadline = time.monotonic() + timeout
        while position < high:
            assert time.monotonic() < deadline, f"read {topic} to {position} of {high} only"
            for msg in consumer.consume(500, 0.1):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position = max(position, msg.offset() or 0)
                    continue
                position = (msg.offset() or 0) + 1
                out.append(
                    RawRecord(
                        msg.offset() or 0,
                        (msg.key() or b"").decode(),
                        msg.value(),
                        dict(msg.headers() or []),
                    )
                )
        return out
    finally:
        consumer.close()


def registration(instance: str, heartbeat_age: float, service: str = "svc") -> Registration:
    """A registration whose last heartbeat was `heartbeat_age` seconds ago."""
    now = now_ms()
    return Registration(
        service=service,
        version="1.0.0",
        instance_id=instance,
        host="elsewhere",
        pid=1,
        started_at=from_ms(now - 3_600_000),
        last_heartbeat=from_ms(now - int(heartbeat_age * 1000)),
        endpoints=endpoints_of(make_service(service, "x")),
    )


def write(
    settings: Settings,
    topic: str,
    records: list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]],
) -> None:
    """Produce raw records (key, value, headers) and wait until the broker has them."""
    ensure_topics(admin_client(settings), [registry_topic_spec(settings, topic)])
    producer = make_producer(settings, low_latency=True)
    for key, value, headers in records:
        producer.produce(topic, value, key.encode(), headers=headers)
    assert producer.flush(15) == 0


def encode(reg: Registration) -> bytes:
    return Codec(REPOSITORY).encode(reg)


class Watcher:
    """Collects a registry's watch() events in a task."""

    def __init__(self, registry: Registry) -> None:
        self.events: list[tuple[float, RegistryEvent]] = []
        self._watch = registry.watch()  # subscribed from here on
        self._task = asyncio.create_task(self._run(), name="test-registry-watcher")

    async def _run(self) -> None:
        async for event in self._watch:
            self.events.append((time.time(), event))

    def of(self, instance: str) -> list[tuple[str, str]]:
        return [(e.kind, e.reason) for _, e in self.events if e.instance_id == instance]

    def first(self, instance: str, kind: str) -> float | None:
        return next(
            (t for t, e in self.events if e.instance_id == instance and e.kind == kind), None
        )

    async def stop(self) -> None:
        self._watch.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def running_with_announcer(
    service: Service, settings: Settings, topic: str, **kwargs: Any
) -> AsyncIterator[tuple[Runtime, Announcer]]:
    """A runtime with an attached announcer; stops gracefully on exit."""
    runtime = Runtime(service, settings)
    announcer = Announcer.for_runtime(runtime, topic=topic, **kwargs)
    await runtime.start()
    task = asyncio.create_task(runtime.run(), name=f"test-{service.name}")
    try:
        await asyncio.wait_for(announcer.announced.wait(), 30)
        yield runtime, announcer
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)


class Child:
    """A service instance in its own process (see `child_main`), reporting JSON lines."""

    def __init__(self, *args: str) -> None:
        argv = ["-m", "tests.integration.test_registry", "child", *args]
        self.proc = spawn_python(argv, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
        self.output = OutputLines(self.proc)

    def report(self, timeout: float = 60) -> dict[str, Any]:
        """The first JSON line the child prints (once it is ready and announced)."""
        return self.reports(timeout)[0]

    def reports(self, timeout: float = 60, count: int = 1) -> list[dict[str, Any]]:
        """The first `count` JSON lines the child prints."""

        def found(lines: list[str]) -> list[dict[str, Any]] | None:
            reports = [json.loads(line) for line in lines if line.startswith("{")]
            return reports[:count] if len(reports) >= count else None

        return self.output.wait(found, timeout, f"{count} report(s) from the child")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def child_main(argv: list[str]) -> int:
    """A Runtime + Announcer process: prints one JSON line when ready, stops on SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--responder", action="store_true")
    parser.add_argument("--changes", type=int, default=0, help="metadata changes after ready")
    parser.add_argument("--prepare", action="store_true", help="prepare() before runtime start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        group = f"{args.service}-{uuid.uuid4().hex[:8]}"
        svc = make_service(args.service, args.topic, responder=args.responder, group=group)
        runtime = Runtime(svc, load_settings())
        ready_at: list[float] = []
        runtime.on_assigned.append(lambda _rt: ready_at.append(time.time()))
        announcer = Announcer.for_runtime(
            runtime, topic=args.registry, heartbeat_interval=args.heartbeat
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.stop)
        if args.prepare:  # what the runtime integration does: topic + producer up front
            await announcer.prepare()
        await runtime.start()
        task = asyncio.create_task(runtime.run(), name="child-runtime")
        await asyncio.wait_for(announcer.announced.wait(), 60)
        report = {
            "instance": runtime.instance_id,
            "ready": ready_at[0],
            "announced": announcer.announced_at,
        }
        print(json.dumps(report), flush=True)
        for seq in range(args.changes):
            await asyncio.sleep(0.1)
            at = time.time()
            announcer.set_metadata(seq=str(seq))
            print(json.dumps({"seq": str(seq), "at": at}), flush=True)
        await task

    asyncio.run(main())
    return 0


# --- tests --------------------------------------------------------------------------------


def test_three_instances_of_two_services_visible_within_a_second(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic, orders = unique_name("registry"), unique_name("orders")
    common = ("--topic", orders, "--registry", reg_topic, "--prepare")

    async def scenario() -> None:
        async with Registry(kit_settings, topic=reg_topic, ttl=6) as registry:
            watcher = Watcher(registry)
            children = [
                # --prepare: what Runtime does, the announcer's topic and producer up front
                Child(*common, "--service", "alpha"),
                Child(*common, "--service", "alpha"),
                Child(*common, "--service", "beta", "--responder"),
            ]
            try:
                reports = [await asyncio.to_thread(c.report) for c in children]
                ids = [r["instance"] for r in reports]
                await wait_until_async(
                    lambda: all(watcher.first(i, "up") for i in ids), timeout=10, what="all up"
                )
                for report in reports:
                    seen = watcher.first(report["instance"], "up")
                    assert seen is not None
                    assert seen - report["ready"] <= 1.0, (report, seen)
                assert sorted(r.instance_id for r in registry.lookup("alpha")) == sorted(ids[:2])
                (beta,) = registry.lookup("beta")
                assert beta.instance_id == ids[2]
                assert registry.has_live("alpha") and registry.has_live("beta")
                assert not registry.has_live("gamma")
                kinds = {(e.kind, e.name, e.topic, e.reply_schema) for e in beta.endpoints}
                assert kinds == {
                    ("handler", "on_order", orders, None),
                    ("responder", "quote", f"{orders}.quote", "billing.InvoiceIssued"),
                }
                assert beta.pid == children[2].proc.pid and beta.metadata == {"team": "t"}
                assert len(registry.instances()) == 3
            finally:
                for child in children:
                    child.stop()
            # Each stopped gracefully: its tombstone ("stopped", not "expired") removes it
            # before the 20 s TTL could.
            await wait_until_async(lambda: not registry.instances(), timeout=5, what="all down")
            await wait_until_async(
                lambda: all(watcher.of(i)[-1:] == [("down", "stopped")] for i in ids), timeout=5
            )
            await watcher.stop()

    asyncio.run(scenario())


def test_graceful_stop_leaves_a_tombstone_and_is_gone_at_once(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic = unique_name("registry")
    svc = make_service("stopper", unique_name("orders"), group=unique_name("g"))

    async def scenario() -> str:
        async with Registry(kit_settings, topic=reg_topic, ttl=30) as registry:
            watcher = Watcher(registry)
            async with running_with_announcer(svc, kit_settings, reg_topic) as (runtime, ann):
                iid = runtime.instance_id
                await wait_until_async(lambda: registry.lookup("stopper"), timeout=10)
                ann.set_metadata(stage="two")
                await wait_until_async(
                    lambda: registry.get(iid) and registry.get(iid).metadata.get("stage"),
                    timeout=10,
                )
            # gone within 5 s of the stop: the tombstone, not the 30 s TTL
            await wait_until_async(lambda: not registry.lookup("stopper"), timeout=5)
            expected = [("up", "announced"), ("changed", ""), ("down", "stopped")]
            await wait_until_async(lambda: watcher.of(iid) == expected, timeout=5)
            await watcher.stop()
        async with Registry(kit_settings, topic=reg_topic, ttl=30) as fresh:
            assert fresh.instances() == []
        return iid

    iid = asyncio.run(scenario())
    last = [r for r in read_all(kit_settings, reg_topic) if r.key == iid][-1]
    assert last.value is None and last.headers[HEADER_REASON] == b"stopped"


def test_a_sync_that_times_out_leaves_the_view_running(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic = unique_name("registry")

    async def scenario() -> None:
        async with Registry(kit_settings, topic=reg_topic, ttl=30, clean=False) as registry:
            gate, real_catch_up = threading.Event(), registry._catch_up

            def held_until_the_caller_gave_up(timeout: float) -> bool:
                gate.wait(30)
                return real_catch_up(timeout)

            registry._catch_up = held_until_the_caller_gave_up  # type: ignore[method-assign]
            with pytest.raises(TimeoutError):
                await registry.sync(timeout=0.2)
            registry._catch_up = real_catch_up  # type: ignore[method-assign]
            gate.set()  # the reader thread now answers a request whose caller has gone
            write(kit_settings, reg_topic, [("late-1", encode(registration("late-1", 0)), None)])
            await registry.sync()  # still served, by a reader thread that is still alive
            assert registry.error is None and registry.get("late-1") is not None

    asyncio.run(scenario())


def test_killed_instance_is_gone_within_ttl_and_stays_gone_for_new_readers(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic, ttl = unique_name("registry"), 2.0
    args = ("--service", "victim", "--topic", unique_name("orders"), "--registry", reg_topic)

    async def scenario() -> None:
        async with Registry(kit_settings, topic=reg_topic, ttl=ttl) as registry:
            watcher = Watcher(registry)
            child = Child(*args, "--heartbeat", "0.5")
            try:
                iid = (await asyncio.to_thread(child.report))["instance"]
                await wait_until_async(lambda: registry.has_live("victim"), timeout=10)
                first = registry.lookup("victim")[0].last_heartbeat

                def heartbeats_went_on() -> bool:  # a heartbeat more than TTL/2 after the first
                    found = registry.lookup("victim")
                    return bool(found) and (found[0].last_heartbeat - first).total_seconds() > 1.0

                await wait_until_async(heartbeats_went_on, timeout=ttl + 2)
                assert registry.has_live("victim")
            finally:
                killed_at = time.monotonic()
                child.stop(signal.SIGKILL)
            await wait_until_async(
                lambda: not registry.has_live("victim"), timeout=ttl + 2, interval=0.01
            )
            gone_after = time.monotonic() - killed_at
            assert gone_after <= ttl + 1.0, gone_after
            await wait_until_async(lambda: watcher.of(iid)[-1:] == [("down", "expired")], timeout=5)
            await watcher.stop()
        # A reader started now reads its last registration but does not resurrect it.
        async with Registry(kit_settings, topic=reg_topic, ttl=ttl) as fresh:
            assert fresh.records >= 1 and fresh.instances() == [] and fresh.get(iid) is None
        values = [r for r in read_all(kit_settings, reg_topic) if r.key == iid]
        assert values and values[-1].value is not None  # no tombstone: it was killed

    asyncio.run(scenario())


def test_reader_after_real_compaction_sees_exactly_the_live_instances(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic, ttl = unique_name("registry"), 2.0
    ensure_topics(
        admin_client(kit_settings), [registry_topic_spec(kit_settings, reg_topic, COMPACT_FAST)]
    )
    svc = make_service("compacted", unique_name("orders"))

    async def scenario() -> None:
        def announcer(hb: float = 0.2) -> Announcer:
            return Announcer(svc, kit_settings, topic=reg_topic, heartbeat_interval=hb)

        live = [announcer() for _ in range(3)]
        stopped = [announcer() for _ in range(2)]
        for ann in [*live, *stopped]:
            await ann.start()
        written = 5
        for n in range(60):  # many updates of every key
            for ann in [*live, *stopped]:
                ann.set_metadata(seq=str(n))
                written += 1
        # An instance that crashed: 60 heartbeats, then nothing (and no tombstone).
        crashed = [("crashed-1", encode(registration("crashed-1", 0, "compacted")), None)] * 60
        await asyncio.to_thread(write, kit_settings, reg_topic, crashed)
        crashed_at, written = time.time(), written + 60
        for ann in stopped:
            await ann.stop()
        stopped_ids = {a.instance_id for a in stopped}

        def compacted() -> bool:
            records = read_all(kit_settings, reg_topic)
            # Only the latest record of each key survives: none of the stopped instances'
            # values (their tombstone came later), one of the crashed instance's 60.
            superseded = [r for r in records if r.key in stopped_ids and r.value is not None]
            crash_records = [r for r in records if r.key == "crashed-1"]
            return len(records) < written / 2 and not superseded and len(crash_records) == 1

        # Live heartbeats keep rolling 100 ms segments; the cleaner runs every second.
        await wait_until_async(
            lambda: asyncio.to_thread(compacted), timeout=60, interval=0.5, what="compaction"
        )
        await wait_until_async(
            lambda: time.time() - crashed_at > ttl, timeout=ttl + 1, what="crash TTL"
        )
        async with Registry(kit_settings, topic=reg_topic, ttl=ttl, clean=False) as fresh:
            assert fresh.records < written / 2
            assert {r.instance_id for r in fresh.instances()} == {a.instance_id for a in live}
            assert fresh.lookup("compacted") and fresh.has_live("compacted")
        for ann in live:
            await ann.stop()

    asyncio.run(scenario())


def test_undecodable_values_are_skipped_with_a_warning(
    kit_settings: Settings, unique_name: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    reg_topic = unique_name("registry")
    good = encode(registration("good-1", 0))
    bad = [
        ("bogus-1", b"not avro at all", None),
        ("bogus-2", b"\xc3\x01" + b"\x13" * 8 + b"\x02\x04", None),  # unknown writer schema
        ("bogus-3", good[:-7], None),  # truncated body
        ("good-2", b"\x00\x01", None),  # garbage for a key that also has a good value
    ]
    caplog.set_level(logging.WARNING, logger="kit.registry")

    async def scenario() -> None:
        async with Registry(kit_settings, topic=reg_topic, ttl=30) as before:
            write(kit_settings, reg_topic, [("good-1", good, None), *bad])
            write(kit_settings, reg_topic, [("good-2", encode(registration("good-2", 0)), None)])
            await before.sync()
            assert sorted(r.instance_id for r in before.lookup("svc")) == ["good-1", "good-2"]
            assert before.skipped == 4
        async with Registry(kit_settings, topic=reg_topic, ttl=30) as after:
            assert sorted(r.instance_id for r in after.lookup("svc")) == ["good-1", "good-2"]
            assert after.skipped == 4 and after.records == 6

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in ("bogus-1", "bogus-2", "bogus-3", "good-2"):
        assert any("skipping record" in w and key in w for w in warnings), (key, warnings)


def test_two_cleaners_remove_a_dead_instance_and_never_a_live_one(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    reg_topic = unique_name("registry")
    svc = make_service("svc", unique_name("orders"))
    write(kit_settings, reg_topic, [("dead-1", encode(registration("dead-1", 60)), None)])

    async def scenario() -> str:
        live = Announcer(svc, kit_settings, topic=reg_topic, heartbeat_interval=0.2)
        await live.start()
        # TTL 3 s against 0.2 s heartbeats: a stall of the live instance of under 2.8 s
        # cannot make it look dead; dead-1 (60 s old) is still well past clean_after.
        options: dict[str, Any] = {"topic": reg_topic, "ttl": 3.0, "clean_after": 6.0}
        async with (
            Registry(kit_settings, **options, clean=False) as observer,
            Registry(kit_settings, **options, clean=True) as one,
            Registry(kit_settings, **options, clean=True) as two,
        ):
            watcher = Watcher(observer)
            await wait_until_async(
                lambda: one.tombstones_written + two.tombstones_written, timeout=10
            )
            # several more cleaning rounds of both cleaners, and the live one survives them
            base = (one.clean_rounds, two.clean_rounds)
            await wait_until_async(
                lambda: one.clean_rounds >= base[0] + 3 and two.clean_rounds >= base[1] + 3,
                timeout=30,
            )
            for reader in (observer, one, two):
                await reader.sync()
                assert [r.instance_id for r in reader.instances()] == [live.instance_id]
            assert watcher.of(live.instance_id) == [("up", "announced")]
            await watcher.stop()
        await live.stop()
        return live.instance_id

    live_id = asyncio.run(scenario())
    records = read_all(kit_settings, reg_topic)
    tombstones = [r for r in records if r.value is None]
    assert {r.key for r in tombstones} == {"dead-1", live_id}
    assert [r.headers[HEADER_REASON] for r in tombstones if r.key == live_id] == [b"stopped"]
    dead = [r for r in tombstones if r.key == "dead-1"]
    assert all(r.headers[HEADER_REASON] == b"expired" and HEADER_CLEANER in r.headers for r in dead)


def test_cleaner_rechecks_the_latest_record_before_tombstoning(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """The race: a cleaner decides an instance is dead, then it heartbeats; no tombstone."""
    reg_topic = unique_name("registry")
    paused, dead = registration("paused-1", 60), registration("dead-1", 60)
    write(kit_settings, reg_topic, [("paused-1", encode(paused), None)])
    write(kit_settings, reg_topic, [("dead-1", encode(dead), None)])
    resumed: list[float] = []

    async def scenario() -> Registry:
        # clean_after 15 s: the resumed heartbeat stays fresh for the rest of the test.
        cleaner = Registry(kit_settings, topic=reg_topic, ttl=5, clean=True, clean_after=15)
        real_catch_up = cleaner._catch_up

        def catch_up_after_the_instance_resumed(timeout: float) -> bool:
            # Called between the cleaner's decision and its re-check, in its thread.
            if not resumed:
                write(
                    kit_settings,
                    reg_topic,
                    [("paused-1", encode(registration("paused-1", 0)), None)],
                )
                resumed.append(time.time())
            return real_catch_up(timeout)

        cleaner._catch_up = catch_up_after_the_instance_resumed  # type: ignore[method-assign]
        async with cleaner:
            await wait_until_async(lambda: cleaner.tombstones_written, timeout=30)
            await cleaner.sync()
            assert resumed
            assert cleaner.get("paused-1") is not None  # still live: its heartbeat is fresh
        return cleaner

    cleaner = asyncio.run(scenario())
    assert cleaner.tombstones_written == 1
    by_key: dict[str, list[RawRecord]] = {}
    for record in read_all(kit_settings, reg_topic):
        by_key.setdefault(record.key, []).append(record)
    assert [r.value is None for r in by_key["paused-1"]] == [False, False]
    assert [r.value is None for r in by_key["dead-1"]] == [False, True]
    judged = by_key["dead-1"][1].headers[HEADER_HEARTBEAT]
    assert int(judged) == int(dead.last_heartbeat.timestamp() * 1000)


def test_a_late_cleaner_tombstone_does_not_remove_an_instance_that_came_back(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """The window no re-check closes: the heartbeat lands between re-check and tombstone."""
    reg_topic = unique_name("registry")
    old = registration("back-1", 60)
    old_ms = str(int(old.last_heartbeat.timestamp() * 1000)).encode()
    late_tombstone = [(HEADER_REASON, b"expired"), (HEADER_HEARTBEAT, old_ms)]
    svc = make_service("svc", unique_name("orders"))

    async def scenario() -> None:
        async with Registry(kit_settings, topic=reg_topic, ttl=5, clean=False) as observer:
            watcher = Watcher(observer)
            write(kit_settings, reg_topic, [("back-1", encode(old), None)])
            write(kit_settings, reg_topic, [("back-1", encode(registration("back-1", 0)), None)])
            write(kit_settings, reg_topic, [("back-1", None, late_tombstone)])
            await observer.sync()
            assert observer.get("back-1") is not None
            assert watcher.of("back-1") == [("up", "heartbeat")]
            await watcher.stop()
        async with Registry(kit_settings, topic=reg_topic, ttl=5, clean=False) as restarted:
            assert restarted.get("back-1") is not None
        # Once compaction drops the heartbeat before the tombstone, the instance's next
        # heartbeat (a full registration) is what makes it visible to new readers again.
        ann = Announcer(svc, kit_settings, "back-1", topic=reg_topic, heartbeat_interval=0.2)
        await ann.start()
        try:

            async def heartbeat_after_tombstone() -> bool:
                records = await asyncio.to_thread(read_all, kit_settings, reg_topic)
                last = [r for r in records if r.key == "back-1"][-1]
                return last.value is not None and last.offset > 2

            await wait_until_async(heartbeat_after_tombstone, timeout=10)
        finally:
            await ann.stop()

    asyncio.run(scenario())


def test_kit_services_cli_prints_live_instances(
    kit_settings: Settings, unique_name: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    from kit.cli import main as kit_main

    reg_topic = unique_name("registry")
    write(kit_settings, reg_topic, [("cli-1", encode(registration("cli-1", 0, "clisvc")), None)])
    write(kit_settings, reg_topic, [("cli-0", encode(registration("cli-0", 6000, "clisvc")), None)])
    # TTL 600 s: cli-1 stays live however slowly the two runs start; cli-0 is long expired.
    assert kit_main(["services", "--topic", reg_topic, "--ttl", "600", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [i["instance_id"] for i in doc["instances"]] == ["cli-1"]
    assert doc["instances"][0]["endpoints"][0]["event_schema"] == "shop.OrderPlaced"
    assert kit_main(["services", "--topic", reg_topic, "--ttl", "600"]) == 0
    out = capsys.readouterr().out
    assert "cli-1" in out and "cli-0" not in out and "1 live instance(s)" in out


# --- benchmark ----------------------------------------------------------------------------


def bench_main(samples: int) -> dict[str, Any]:
    """Announce→visible and ready→visible across processes, kill -9 eviction, lookup cost."""
    settings = load_settings()
    topic = f"bench-registry-{uuid.uuid4().hex[:8]}"
    ttl, heartbeat = 2.0, 0.5
    result: dict[str, Any] = {"topic": topic, "ttl_s": ttl, "heartbeat_s": heartbeat}

    async def run() -> None:
        async with Registry(settings, topic=topic, ttl=ttl, clean=False) as registry:
            watcher = Watcher(registry)
            ready_lag: dict[bool, list[float]] = {True: [], False: []}
            announce_lag, change_lag, evictions = [], [], []
            changes = 5
            for n in range(samples):
                prepared = n % 2 == 0
                args = ("--service", f"bench{n % 3}", "--topic", f"{topic}-orders")
                child = Child(
                    *args,
                    *(["--prepare"] if prepared else []),
                    *("--registry", topic, "--heartbeat", str(heartbeat), "--changes", "5"),
                )
                report, *changed = await asyncio.to_thread(child.reports, 60, 1 + changes)
                iid = report["instance"]
                await wait_until_async(lambda i=iid: watcher.first(i, "up"), interval=0.005)
                seen = watcher.first(iid, "up")
                assert seen is not None
                ready_lag[prepared].append(seen - report["ready"])
                announce_lag.append(seen - report["announced"])
                for line in changed:
                    arrival = await wait_until_async(
                        lambda i=iid, q=line["seq"]: next(
                            (
                                t
                                for t, e in watcher.events
                                if e.instance_id == i
                                and e.kind == "changed"
                                and e.registration.metadata.get("seq") == q
                            ),
                            None,
                        ),
                        interval=0.005,
                    )
                    change_lag.append(arrival - line["at"])
                await asyncio.sleep(0.7)
                killed = time.monotonic()
                child.stop(signal.SIGKILL)
                await wait_until_async(
                    lambda i=iid: registry.get(i) is None, timeout=ttl + 5, interval=0.005
                )
                evictions.append(time.monotonic() - killed)
            await watcher.stop()
            result["ready_to_visible_ms"] = _stats(ready_lag[True], 1000)
            result["ready_to_visible_unprepared_ms"] = _stats(ready_lag[False], 1000)
            result["first_announce_to_visible_ms"] = _stats(announce_lag, 1000)
            result["announce_to_visible_ms"] = _stats(change_lag, 1000)
            result["kill9_to_gone_s"] = _stats(evictions, 1)
        # Lookup cost with 100 live instances of 10 services in the view.
        async with Registry(settings, topic=f"{topic}-lookup", ttl=60, clean=False) as reg:
            write(
                settings,
                reg.topic,
                [
                    (f"i{n}", encode(registration(f"i{n}", 0, f"s{n % 10}")), None)
                    for n in range(100)
                ],
            )
            await reg.sync()
            assert len(reg.instances()) == 100
            number = 200_000
            for name, call in [
                ("lookup_us", lambda: reg.lookup("s3")),
                ("has_live_us", lambda: reg.has_live("s3")),
                ("instances_100_us", reg.instances),
            ]:
                best = min(timeit.repeat(call, number=number // 10, repeat=5))
                result[name] = round(best / (number // 10) * 1e6, 3)

    asyncio.run(run())
    return result


def _stats(values: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(v * scale for v in values)
    return {
        "n": len(ordered),
        "min": round(ordered[0], 1),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(child_main(sys.argv[2:]))
    if sys.argv[1:2] == ["bench"]:
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 10
        print(json.dumps(bench_main(count), indent=2))
        sys.exit(0)
    sys.exit(f"usage: {sys.argv[0]} child ... | bench [samples]")
