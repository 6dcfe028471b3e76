"""`kit dlt` on a real broker: dead letters made by a kit service whose handler fails, then
listed, shown and redriven, counting exactly what comes out; a second redrive sends
nothing, and a redrive stopped half-way is finished by the next one, once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Message

from kit import Client, Service, Settings
from kit.dlt import dead_letter_counts, parse_where, redrive, show
from kit.dlt.reading import Session
from kit.dlt.redriving import deliver, plan_redrive
from kit.schema import SchemaRepository
from kit.testing.wait import wait_until_async
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order, read_raw, running
from tests.integration.test_reliability import create_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

FAIL = {"o-2", "o-4", "o-6", "o-8", "o-10"}
"""The orders the handler fails on (reason handler); two junk records fail to decode."""
ORDERS = 10
JUNK = 2
LETTERS = len(FAIL) + JUNK


def shop(topic: str, group: str, fail: set[str]) -> tuple[Service, list[str]]:
    """A service whose handler raises for the orders in `fail` (no retries)."""
    handled: list[str] = []
    svc = Service("dlt-shop", group_id=group)

    @svc.handler(topic=topic, partitions=2, retries=0)
    async def on_order(event: OrderPlaced) -> None:
        if event.order_id in fail:
            raise RuntimeError(f"no stock for {event.order_id}")
        handled.append(event.order_id)

    return svc, handled


def make_dead_letters(settings: Settings, bootstrap: str, topic: str, group: str) -> list[Message]:
    """Run the failing service over 10 orders and 2 junk records until it dead-lettered
    7 of them; stop it. Returns the source topic's 12 records."""

    async def scenario() -> None:
        svc, handled = shop(topic, group, FAIL)
        async with running(svc, settings), Client(settings) as client:
            for n in range(1, ORDERS + 1):
                await client.publish(order(n), key=f"k{n}", topic=topic, headers={"trace": f"t{n}"})
            for n in range(JUNK):
                await client.publish_raw(topic, b"junk-%d" % n, key=f"j{n}", headers={"trace": "j"})
            await wait_until_async(
                lambda: len(handled) == ORDERS - len(FAIL), timeout=30, what="the good orders"
            )

    asyncio.run(scenario())
    assert len(read_raw(bootstrap, f"{topic}.dlt", LETTERS)) == LETTERS
    source = read_raw(bootstrap, topic, ORDERS + JUNK)
    assert len(source) == ORDERS + JUNK
    return source


def kit_dlt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", "dlt", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def redriven(records: list[Message], dlt: str) -> list[str]:
    """The kit-redriven-from markers (naming a letter of `dlt`) on `records`."""
    markers = [dict(m.headers() or []).get("kit-redriven-from") for m in records]
    return [m.decode() for m in markers if m is not None and m.decode().startswith(f"{dlt}/")]


def test_list_show_and_redrive_count_exactly_what_came_out(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic, started = unique_name("orders"), time.time() * 1000
    dlt = f"{topic}.dlt"
    source = make_dead_letters(kit_settings, kafka_bootstrap, topic, unique_name("g"))
    where_from = {m.key().decode(): (m.partition(), m.offset()) for m in source if m.key()}

    # list: the CLI's JSON and the function agree, counted by reason
    done = kit_dlt("list", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = [r for r in json.loads(done.stdout) if r["topic"] == dlt]
    assert (row["records"], row["partitions"]) == (LETTERS, 2)
    assert row["reasons"] == {"decode": JUNK, "handler": len(FAIL), "delivery": 0}
    (counts,) = [c for c in dead_letter_counts(kit_settings) if c.topic == dlt]
    assert counts.reasons == Counter({"handler": len(FAIL), "decode": JUNK})

    # show: values decoded by writer fingerprint from the schema topic (no local schemas)
    shown, matched = show(kit_settings, dlt, limit=100, repository=SchemaRepository())
    assert (len(shown), matched) == (LETTERS, LETTERS)
    for item in shown:
        x = item.letter
        assert x.timestamp_ms >= started - 5000, "when it failed"
        assert (x.original_partition, x.original_offset) == where_from[(x.key or b"").decode()]
        assert x.original_topic == topic
        if x.reason == "handler":
            assert item.error is None, item.error
            assert item.value["order_id"] in FAIL
            assert x.exception == f"RuntimeError: no stock for {item.value['order_id']}"
        else:
            assert x.reason == "decode" and item.value is None
            assert item.error is not None and item.error.startswith("not Avro single-object")
    newest, matched = show(kit_settings, dlt, limit=3, where=parse_where(["reason=handler"]))
    assert (len(newest), matched) == (3, len(FAIL))
    stamps = [i.letter.timestamp_ms for i in shown if i.letter.reason == "handler"]
    assert [i.letter.timestamp_ms for i in newest] == sorted(stamps)[-3:]
    done = kit_dlt("show", dlt, "--json", "--limit", "100")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == LETTERS
    assert f"{LETTERS} of {LETTERS} dead letter(s)" in done.stderr

    # a dry run sends nothing
    handler_only = parse_where(["reason=handler"])
    dry = redrive(kit_settings, dlt, where=handler_only, dry_run=True)
    assert (len(dry.plan.chosen), dry.delivered) == (len(FAIL), None)
    assert len(read_raw(kafka_bootstrap, topic, ORDERS + JUNK)) == ORDERS + JUNK

    # the handler failures go back: exactly 5, as they were, into their own partitions
    result = redrive(kit_settings, dlt, where=handler_only)
    assert result.ok and result.delivered == Counter({topic: len(FAIL)})
    after = read_raw(kafka_bootstrap, topic, ORDERS + JUNK + len(FAIL))
    back = [m for m in after if dict(m.headers() or []).get("kit-redriven-from")]
    assert len(after) == ORDERS + JUNK + len(FAIL) and len(back) == len(FAIL)
    letters = {i.letter.marker: i.letter for i in shown}
    for m in back:
        headers = dict(m.headers() or [])
        x = letters[headers["kit-redriven-from"].decode()]
        assert (m.key(), m.value(), m.partition()) == (x.key, x.value, x.original_partition)
        assert headers["trace"] == dict(x.headers)["trace"], "its own headers are kept"
        assert not [k for k in headers if k.startswith("kit-dlt-")]

    # the same command again sends nothing
    done = kit_dlt("redrive", dlt, "--where", "reason=handler")
    assert done.returncode == 0, done.stderr
    assert f"redrove 0 record(s) from {dlt}" in done.stdout
    assert f"{len(FAIL)} already redriven" in done.stdout
    assert f"{JUNK} not matching reason=handler" in done.stdout

    # everything else, then nothing: each dead letter came back exactly once
    rest = redrive(kit_settings, dlt)
    assert rest.delivered == Counter({topic: JUNK})
    assert redrive(kit_settings, dlt).delivered == Counter()
    final = read_raw(kafka_bootstrap, topic, ORDERS + JUNK + LETTERS)
    assert len(final) == ORDERS + JUNK + LETTERS
    assert sorted(redriven(final, dlt)) == sorted(letters)


def test_a_redrive_stopped_half_way_sends_the_rest_once(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic = unique_name("orders")
    dlt = f"{topic}.dlt"
    make_dead_letters(kit_settings, kafka_bootstrap, topic, unique_name("g"))
    with Session(kit_settings) as session:
        plan = plan_redrive(session, dlt, parse_where([]), None)
    assert len(plan.chosen) == LETTERS
    plan.chosen = plan.chosen[:3]  # as if killed once three were confirmed
    assert deliver(kit_settings, plan).delivered == Counter({topic: 3})

    result = redrive(kit_settings, dlt)
    assert result.delivered == Counter({topic: LETTERS - 3})
    assert len(result.plan.skipped["already redriven"]) == 3
    assert redrive(kit_settings, dlt).delivered == Counter()
    final = read_raw(kafka_bootstrap, topic, ORDERS + JUNK + LETTERS)
    assert len(final) == ORDERS + JUNK + LETTERS
    markers = redriven(final, dlt)
    assert len(markers) == len(set(markers)) == LETTERS


def test_the_fixed_service_handles_each_redriven_record_once(
    kit_settings: Settings, unique_name: Callable[[str], str], kafka_bootstrap: str
) -> None:
    topic, group, retry = unique_name("orders"), unique_name("g"), unique_name("retry")
    dlt = f"{topic}.dlt"
    make_dead_letters(kit_settings, kafka_bootstrap, topic, group)

    for _ in range(2):  # twice: the second sends nothing
        done = kit_dlt("redrive", dlt, "--where", "reason=handler")
        assert done.returncode == 0, done.stderr
    assert f"redrove 0 record(s) from {dlt}" in done.stdout

    async def fixed() -> list[str]:
        svc, handled = shop(topic, group, set())  # the bug is fixed: nothing fails
        async with running(svc, kit_settings):
            await wait_until_async(lambda: set(handled) >= FAIL, timeout=30, what="redriven")
            await asyncio.sleep(1)  # time for a duplicate to show up, if there were one
        return handled

    handled = asyncio.run(fixed())
    assert Counter(handled) == Counter(FAIL), "each redriven order handled once, nothing else"
    assert len(read_raw(kafka_bootstrap, dlt, LETTERS)) == LETTERS, "no new dead letters"

    # --to another topic: by key, once
    create_topic(kafka_bootstrap, retry, 1)
    for _ in range(2):
        done = kit_dlt("redrive", dlt, "--where", "reason=decode", "--to", retry, "--timeout", "30")
        assert done.returncode == 0, done.stderr
    assert f"redrove 0 record(s) from {dlt}" in done.stdout
    assert sorted(m.value() for m in read_raw(kafka_bootstrap, retry, JUNK)) == [
        b"junk-0",
        b"junk-1",
    ]
