"""The ACLs of docs/security.md, on a SASL broker with StandardAuthorizer ACLs.

Each kind of service runs as a principal that has exactly the ACLs the tables in
docs/security.md list for it (read from the file), and fails without any one of them. A
principal without ACLs on another service's topic, on the registry topic, on its group or
on its transactional id cannot use them, and kit names the resource and the principal.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from kit import Client, Codec, Context, KitError, RequestTimeout, Service, load_settings
from kit.broker.local import BrokerInfo
from kit.registry import Registry
from kit.registry.model import registry_topic_spec
from kit.runtime import Runtime
from kit.schema import Schema
from kit.testing.process import OutputLines, spawn_python
from kit.transport.admin import TopicSpec, ensure_topics
from tests.fixtures.events import CheckStock, OrderChecked, OrderPlaced, StockLevel
from tests.integration.helpers import order
from tests.integration.sasl_broker import (  # noqa: F401  (sasl_broker is a fixture)
    Acl,
    Principal,
    add_principal,
    sasl_broker,
    use_principal,
)
from tests.integration.test_reliability import invoicing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
CODEC = Codec(OrderPlaced.__kit_repository__)
ORDERS = 12  # valid orders per run, plus one undecodable record and one of another version

# --- the tables of docs/security.md ------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One operation of one table row: the name may hold placeholders such as <in>."""

    resource: str
    pattern: str
    name: str
    operation: str
    needed: str

    def acl(self, names: dict[str, str]) -> Acl:
        """The ACL with the placeholders replaced by `names`."""
        name = self.name
        for placeholder in sorted(names, key=len, reverse=True):
            name = name.replace(placeholder, names[placeholder])
        assert "<" not in name, f"placeholder left in {name!r} (names: {names})"
        return Acl(self.resource, self.pattern, name, self.operation)

    def __str__(self) -> str:
        return f"{self.resource}:{self.pattern}:{self.name}:{self.operation}"


def documented(section: str) -> list[Row]:
    """The rows of the first table under `### <section>` in docs/security.md."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"### {section}")
    rows: list[Row] = []
    in_table = False
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not in_table:  # the header row
            assert cells == ["Resource", "Pattern", "Name", "Operations", "Needed"], cells
            in_table = True
            continue
        if set(cells[0]) <= {"-"}:
            continue
        resource, pattern, name, operations, needed = cells
        rows += [
            Row(resource, pattern, name.strip("`"), op.strip(), needed)
            for op in operations.split(",")
        ]
    assert rows, f"no table under '### {section}' in {DOC}"
    return rows


def acls(section: str, names: dict[str, str], *needed: str) -> list[Acl]:
    """The documented ACLs of `section` whose Needed column is in `needed` ("always" too)."""
    keep = {"always", *needed}
    return [row.acl(names) for row in documented(section) if row.needed in keep]


HANDLER = "A handler service"
RESPONDER = "A responder service"
CALLER = "A caller of requests"
EXACTLY_ONCE = "An exactly-once service"
READER = "A reader of the registry"
QUIET = "Quieter logs"
KIT_CREATES = "kit creates topics"

ABLATIONS = [  # every row with topics made by an operator; the Create rows when kit makes them
    pytest.param(False, row, id=f"operator-{row}")
    for row in documented(HANDLER)
    if row.needed == "always"
] + [
    pytest.param(True, row, id=f"kit-{row}")
    for row in documented(HANDLER)
    if row.needed == KIT_CREATES and row.operation == "Create"
]


def test_the_tables_of_docs_security_parse() -> None:
    known = {"always", KIT_CREATES, "fail-fast", "quiet"}
    operations = {"Read", "Write", "Create", "Delete", "DescribeConfigs", "AlterConfigs"}
    operations |= {"Describe"}
    for section in (HANDLER, RESPONDER, CALLER, EXACTLY_ONCE, READER, QUIET):
        for row in documented(section):
            assert row.needed in known, row
            assert row.operation in operations, row
            assert row.resource in {"Topic", "Group", "TransactionalId"}, row
            assert row.pattern in {"literal", "prefixed"}, row
            row.acl({p: "x" for p in re.findall(r"<[^>]+>", row.name)})  # placeholders only
    assert {str(r) for r in documented(READER)} == {"Topic:literal:_kit_registry:Read"}


# --- the broker, as its super user ---------------------------------------------------------


@pytest.fixture(scope="module")
def kit_topics(sasl_broker: BrokerInfo) -> Iterator[BrokerInfo]:  # noqa: F811
    """`_kit_schemas` and `_kit_registry`, made by the operator (the super user) once."""
    settings = load_settings(env={}, topic_replication=1)
    ensure_topics(
        AdminClient(sasl_broker.client_config()),
        [
            TopicSpec(settings.schema_topic, 1, 1, (("cleanup.policy", "compact"),)),
            registry_topic_spec(settings, "_kit_registry"),
        ],
    )
    yield sasl_broker
    gc.collect()  # clients of runtimes that failed to start: closed before the broker stops


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KIT_* setting of the session changes what a test grants or expects."""
    for key in (
        "KIT_GROUP_ID",
        "KIT_CREATE_TOPICS",
        "KIT_EXACTLY_ONCE",
        "KIT_TRANSACTIONAL_ID",
        "KIT_TOPIC_REPLICATION",
        "KIT_SCHEMA_TOPIC",
        "KIT_DEAD_LETTER_SUFFIX",
        "KIT_REGISTRY_ENABLED",
        "KIT_REGISTRY_TOPIC",
        "KIT_REGISTRY_FAIL_FAST",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))  # transactional id slots


def create_topic(info: BrokerInfo, name: str, partitions: int = 3, **config: str) -> None:
    admin = AdminClient(info.client_config())
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=5).topics.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            if all(p.leader >= 0 for p in meta.partitions.values()):
                return
        time.sleep(0.05)
    raise AssertionError(f"topic {name} not ready")


def produce(info: BrokerInfo, topic: str, rows: list[dict[str, Any]]) -> None:
    producer = Producer({**info.client_config(), "enable.idempotence": True})
    for row in rows:
        producer.produce(topic, **row)
    assert producer.flush(15) == 0


def _consumer(info: BrokerInfo) -> Consumer:
    return Consumer(
        {
            **info.client_config(),
            "group.id": f"acl-test-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )


def read_all(info: BrokerInfo, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every committed record of `topic` up to its end offsets ([] if it does not exist)."""
    consumer = _consumer(info)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = list(meta.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out += [m for m in consumer.consume(500, 0.2) if m.error() is None]
            positions = consumer.position([TopicPartition(topic, p) for p in parts])
            if all(tp.offset >= ends[tp.partition] for tp in positions if ends[tp.partition]):
                break
        return out
    finally:
        consumer.close()


def committed_and_ends(info: BrokerInfo, group: str, topic: str) -> tuple[dict, dict]:
    consumer = Consumer({**info.client_config(), "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        return {tp.partition: max(tp.offset, 0) for tp in tps}, ends
    finally:
        consumer.close()


def topic_limit(info: BrokerInfo, topic: str) -> int:
    admin = AdminClient(info.client_config())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(15)
    return int(entries["max.message.bytes"].value)


def another_version(info: BrokerInfo, n: int) -> bytes:
    """An order written with a newer shop.OrderPlaced (one more field, with a default) that
    only the schema topic knows: decoding it needs Read on _kit_schemas."""
    definition = copy.deepcopy(OrderPlaced.kit_schema().definition)
    field = f"gift_{uuid.uuid4().hex[:8]}"
    definition["fields"].append({"name": field, "type": "boolean", "default": False})
    schema = Schema.from_json(definition)
    produce(
        info, "_kit_schemas", [{"key": schema.fingerprint.hex().encode(), "value": schema.text}]
    )
    datum = CODEC.decode_any(CODEC.encode(order(n)))
    datum[field] = True
    return CODEC.encode_datum(schema, datum)


def bare(exc: BaseException) -> BaseException:
    """The exception without its traceback: the frames it holds keep failed clients alive
    (and connecting) after the broker is gone."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


def messages(caplog: pytest.LogCaptureFixture, *errors: BaseException | str) -> list[str]:
    return [str(e) for e in errors] + [r.getMessage() for r in caplog.records]


def settings_for(**overrides: Any) -> Any:
    return load_settings(
        retry_backoff=0.01,
        retry_backoff_max=0.05,
        shutdown_timeout=10,
        connect_timeout=10,
        **overrides,
    )


# --- a handler service end to end ---------------------------------------------------------


def handler_names(tag: str | None = None) -> dict[str, str]:
    tag = tag or uuid.uuid4().hex[:8]
    return {"<group>": f"g-{tag}", "<in>": f"orders-{tag}", "<out>": f"invoices-{tag}"}


def make_topics(info: BrokerInfo, names: dict[str, str]) -> None:
    """What an operator creates when KIT_CREATE_TOPICS is false."""
    for topic in (names["<in>"], names["<in>"] + ".dlt", names["<out>"]):
        create_topic(info, topic, 3)


@dataclass
class HandlerRun:
    """What a run of the invoicing service showed: problems (empty: it worked)."""

    problems: list[str]
    runtime: Runtime | None = None
    error: BaseException | None = None


def run_invoicing(
    info: BrokerInfo,
    names: dict[str, str],
    *,
    create_topics: bool,
    exactly_once: bool = False,
    wait: float = 10.0,
    out: str | None = None,
) -> HandlerRun:
    """Run invoicing (<in> → <out>) as the principal of the environment and check that it
    did everything a handler service does: announce, decode (also another writer schema
    version), publish, dead-letter, commit, and learn the size limits of its topics."""
    source, dlt, group = names["<in>"], names["<in>"] + ".dlt", names["<group>"]
    target = out or names["<out>"]
    svc = invoicing(source, target, group)
    svc.exactly_once = exactly_once
    settings = settings_for(create_topics=create_topics)
    run = HandlerRun([])
    rows = [{"value": CODEC.encode(order(i)), "key": f"k{i}".encode()} for i in range(ORDERS)]
    rows += [{"value": b"not avro", "key": b"bad"}, {"value": another_version(info, 99)}]

    async def scenario() -> None:
        runtime = Runtime(svc, settings)
        try:
            await runtime.start()
        except Exception as exc:
            run.error = bare(exc)
            run.problems.append(f"start failed: {type(exc).__name__}: {exc}")
            return
        run.runtime = runtime
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.to_thread(produce, info, source, rows)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not task.done():
                if runtime.dispatcher.handled >= ORDERS + 1 and runtime.dispatcher.dead_lettered:
                    break
                await asyncio.sleep(0.05)
            else:
                run.problems.append(
                    f"handled {runtime.dispatcher.handled} of {ORDERS + 1} and dead-lettered "
                    f"{runtime.dispatcher.dead_lettered} of 1 within {wait}s"
                )
            if runtime.announcer is None or not await runtime.announcer.confirmed(5):
                run.problems.append("registration not confirmed")
        finally:
            runtime.stop()
            try:
                await asyncio.wait_for(task, 60)
            except Exception as exc:
                run.error = bare(exc)
                run.problems.append(f"stopped with {type(exc).__name__}: {exc}")

    asyncio.run(scenario())
    runtime = run.runtime
    if runtime is None:
        return run
    invoices = read_all(info, target)
    if len(invoices) != ORDERS + 1:
        run.problems.append(f"{len(invoices)} invoices on {target}, not {ORDERS + 1}")
    dead = read_all(info, dlt)
    if len(dead) != 1:
        run.problems.append(f"{len(dead)} dead letters on {dlt}, not 1")
    committed, ends = committed_and_ends(info, group, source)
    if committed != ends:
        run.problems.append(f"committed {committed}, end offsets {ends}")
    for topic in (source, dlt):  # DescribeConfigs: start-up learned max.message.bytes
        if topic not in runtime.sink.limits:
            run.problems.append(f"max.message.bytes of {topic} not known")
    if runtime.announcer is not None and runtime.announcer.delivery_errors:
        run.problems.append(f"{runtime.announcer.delivery_errors} registry writes refused")
    return run


def authorization_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog) if "AUTHORIZATION" in m]


@pytest.mark.parametrize("create_topics", [True, False], ids=["kit-creates", "operator-creates"])
def test_a_handler_service_runs_with_exactly_its_documented_acls(
    kit_topics: BrokerInfo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    create_topics: bool,
) -> None:
    names = handler_names()
    if not create_topics:
        make_topics(kit_topics, names)
    granted = acls(HANDLER, names, *([KIT_CREATES] if create_topics else [])) + acls(
        QUIET, {}, "quiet"
    )
    use_principal(monkeypatch, kit_topics, add_principal(kit_topics, granted, "handler"))
    run = run_invoicing(kit_topics, names, create_topics=create_topics)
    assert run.problems == [], f"{run.problems}\n{authorization_warnings(caplog)}"
    assert authorization_warnings(caplog) == []


@pytest.mark.parametrize(("create_topics", "dropped"), ABLATIONS)
def test_each_documented_acl_of_a_handler_service_is_needed(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch, create_topics: bool, dropped: Row
) -> None:
    names = handler_names()
    if not create_topics:
        make_topics(kit_topics, names)
    keep = {"always", KIT_CREATES} if create_topics else {"always"}
    granted = [r.acl(names) for r in documented(HANDLER) if r.needed in keep and r != dropped]
    use_principal(monkeypatch, kit_topics, add_principal(kit_topics, granted, "handler"))
    run = run_invoicing(kit_topics, names, create_topics=create_topics, wait=6.0)
    assert run.problems, f"the service did everything without {dropped}: the row is not needed"


@pytest.mark.parametrize("alter", [True, False], ids=["with-AlterConfigs", "without"])
def test_a_smaller_dead_letter_topic_is_raised_only_with_alter_configs(
    kit_topics: BrokerInfo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    alter: bool,
) -> None:
    names = handler_names()
    source, dlt = names["<in>"], names["<in>"] + ".dlt"
    create_topic(kit_topics, source, 3, **{"max.message.bytes": "2000000"})
    create_topic(kit_topics, dlt, 3)  # the broker's default, 1048588
    granted = [
        row.acl(names)
        for row in documented(HANDLER)
        if row.needed in {"always", KIT_CREATES} and (alter or row.operation != "AlterConfigs")
    ]
    use_principal(monkeypatch, kit_topics, add_principal(kit_topics, granted, "handler"))

    async def start_and_stop() -> None:
        runtime = Runtime(invoicing(source, names["<out>"], names["<group>"]), settings_for())
        await runtime.start()
        runtime.stop()
        await runtime.run()

    asyncio.run(start_and_stop())
    if alter:
        assert topic_limit(kit_topics, dlt) == 2_000_000
    else:
        assert topic_limit(kit_topics, dlt) == 1_048_588
        assert any("larger dead letters will be cut to fit" in m for m in messages(caplog))


# --- what a principal without ACLs cannot do, and what kit says -----------------------------


def _says(found: list[str], user: str, resource: str) -> bool:
    """Some message says that User:<user> is not authorized, and names `resource`."""
    return any(f"principal User:{user} is not authorized" in m and resource in m for m in found)


@pytest.mark.parametrize("can_describe", [False, True], ids=["no-acl", "describe-only"])
def test_a_service_cannot_publish_to_another_services_topic_and_kit_names_it(
    kit_topics: BrokerInfo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    can_describe: bool,
) -> None:
    """Fails with no-acl while kit.transport.kafka.ensure_topics names User:ANONYMOUS: it
    builds the authorization message without the client settings."""
    names = handler_names()
    other = f"payments-{uuid.uuid4().hex[:8]}"  # another service's topic
    make_topics(kit_topics, names)
    create_topic(kit_topics, other, 3)
    granted = acls(HANDLER, names)
    if can_describe:
        granted.append(Acl("Topic", "literal", other, "Describe"))
    principal = add_principal(kit_topics, granted, "handler")
    use_principal(monkeypatch, kit_topics, principal)
    svc = invoicing(names["<in>"], other, names["<group>"])
    produce(kit_topics, names["<in>"], [{"value": CODEC.encode(order(1)), "key": b"k"}])

    async def scenario() -> BaseException | None:
        runtime = Runtime(svc, settings_for(create_topics=False))
        await runtime.start()
        try:
            await asyncio.wait_for(runtime.run(), 30)
        except Exception as exc:
            return bare(exc)
        return None

    error = asyncio.run(scenario())
    assert isinstance(error, KitError), f"the service did not stop: {error!r}"
    assert read_all(kit_topics, other) == [], "it wrote to a topic it has no ACL for"
    committed, _ends = committed_and_ends(kit_topics, names["<group>"], names["<in>"])
    assert sum(committed.values()) == 0, "the order whose invoice was refused was committed"
    assert _says([str(error)], principal.user, f"topic '{other}'"), str(error)


@pytest.mark.parametrize("can_read", [False, True], ids=["no-acl", "read-only"])
def test_a_service_without_write_on_the_registry_topic_cannot_announce_and_kit_names_it(
    kit_topics: BrokerInfo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    can_read: bool,
) -> None:
    """Fails with no-acl (User:ANONYMOUS, as above) and with read-only: the announcer only
    logs `registry write of <instance> failed: KafkaError{...}`, naming neither the topic
    nor the principal, keeps the service running unannounced, and its tombstone raises."""
    names = handler_names()
    make_topics(kit_topics, names)
    granted = [a for a in acls(HANDLER, names) if a.name != "_kit_registry"]
    if can_read:
        granted.append(Acl("Topic", "literal", "_kit_registry", "Read"))
    principal = add_principal(kit_topics, granted, "handler")
    use_principal(monkeypatch, kit_topics, principal)
    instance = f"invoicing-{uuid.uuid4().hex[:12]}"
    svc = invoicing(names["<in>"], names["<out>"], names["<group>"])

    async def scenario() -> BaseException | None:
        runtime = Runtime(svc, settings_for(create_topics=False), instance_id=instance)
        try:
            await runtime.start()
        except Exception as exc:
            return bare(exc)
        task = asyncio.create_task(runtime.run())
        deadline = time.monotonic() + 8
        announcer = runtime.announcer
        while time.monotonic() < deadline and not task.done():
            if announcer is not None and announcer.delivery_errors:
                break
            await asyncio.sleep(0.05)
        runtime.stop()
        try:
            await asyncio.wait_for(task, 30)
        except Exception as exc:
            return bare(exc)
        return None

    error = asyncio.run(scenario())
    keys = {m.key() for m in read_all(kit_topics, "_kit_registry")}
    assert instance.encode() not in keys, "it wrote to the registry without an ACL"
    found = messages(caplog, *([error] if error else []))
    assert _says(found, principal.user, "topic '_kit_registry'"), "\n".join(found)


def test_a_service_without_its_group_acl_stops_and_names_the_group(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails while the runtime logs GROUP_AUTHORIZATION_FAILED as a plain consumer warning
    and waits for ever, handling nothing (kit.transport.consumer.KafkaConsumer._check_errors)."""
    names = handler_names()
    make_topics(kit_topics, names)
    granted = [a for a in acls(HANDLER, names) if a.resource != "Group"]
    principal = add_principal(kit_topics, granted, "handler")
    use_principal(monkeypatch, kit_topics, principal)
    produce(kit_topics, names["<in>"], [{"value": CODEC.encode(order(1)), "key": b"k"}])
    svc = invoicing(names["<in>"], names["<out>"], names["<group>"])

    async def scenario() -> BaseException | str:
        runtime = Runtime(svc, settings_for(create_topics=False))
        await runtime.start()
        task = asyncio.create_task(runtime.run())
        done, _ = await asyncio.wait({task}, timeout=15)
        if not done:
            runtime.stop()
            await asyncio.wait_for(task, 30)
            return "still running after 15 s, handling nothing"
        error = task.exception()
        return bare(error) if error else "stopped without an error"

    outcome = asyncio.run(scenario())
    found = messages(caplog, outcome)
    assert isinstance(outcome, KitError), "\n".join(found)
    assert _says([str(outcome)], principal.user, f"group '{names['<group>']}'"), str(outcome)


# --- request-reply --------------------------------------------------------------------------

STOCKROOM = {"<group>": "stockroom", "<service>.<method>": "stockroom.check_stock"}


@contextlib.contextmanager
def stockroom_process(env: dict[str, str]) -> Iterator[OutputLines]:
    """`kit run tests.fixtures.stockroom:service` as the principal of `env`, until the block
    ends."""
    proc = spawn_python(
        ["-m", "kit.cli", "run", "tests.fixtures.stockroom:service"],
        env={**env, "PYTHONPATH": str(ROOT), "KIT_LOG_LEVEL": "INFO"},
        cwd=ROOT,
    )
    out = OutputLines(proc)
    try:
        out.wait_for("kit: stockroom ready:", 60)  # once its registration is on the broker
        yield out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except Exception:
                proc.kill()
                proc.wait(10)


def test_a_responder_a_client_and_a_registry_reader_with_their_documented_acls(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = kit_topics
    quiet = acls(QUIET, {}, "quiet")
    responder = add_principal(info, acls(RESPONDER, STOCKROOM, KIT_CREATES) + quiet, "stockroom")
    caller_names = {"<service>.<method>": "stockroom.check_stock", "<caller>": "client"}
    caller = add_principal(info, acls(CALLER, caller_names, "fail-fast") + quiet, "client")
    reader = add_principal(info, acls(READER, {}) + quiet, "reader")
    responder_env = use_principal(monkeypatch, info, responder)
    use_principal(monkeypatch, info, caller)

    async def call() -> tuple[StockLevel, str]:
        async with Client(settings_for()) as client:  # fail-fast: it reads the registry
            level = await client.request(
                "stockroom.check_stock",
                CheckStock(sku="tea", quantity=2, request_id="r-1"),
                reply=StockLevel,
                timeout=20,
            )
            return level, client.requester.reply_topic

    async def look_up() -> list[Any]:
        async with Registry(settings_for(), clean=False) as registry:
            return registry.lookup("stockroom")

    with stockroom_process(responder_env) as out:
        level, reply_topic = asyncio.run(call())
        use_principal(monkeypatch, info, reader)
        found = asyncio.run(look_up())
    assert level.request_id == "r-1" and level.enough
    assert reply_topic not in AdminClient(info.client_config()).list_topics(timeout=10).topics
    assert found, "the registry reader sees no live stockroom instance"
    assert authorization_warnings(caplog) == []
    assert [line for line in out.lines if "AUTHORIZATION" in line] == [], "".join(out.lines)


def checker(name: str, source: str, target: str, group: str) -> Service:
    """A handler service that calls stockroom for each order and publishes the outcome."""
    svc = Service(name, group_id=group)

    @svc.handler(topic=source)
    async def on_order(event: OrderPlaced, ctx: Context) -> None:
        level = await ctx.request(
            "stockroom.check_stock", CheckStock(sku="tea", quantity=1), reply=StockLevel
        )
        ctx.publish(
            OrderChecked(order_id=event.order_id, accepted=level.enough),
            key=event.order_id,
            topic=target,
        )

    return svc


def test_a_handler_that_calls_a_responder_with_their_documented_acls(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = kit_topics
    quiet = acls(QUIET, {}, "quiet")
    responder = add_principal(info, acls(RESPONDER, STOCKROOM, KIT_CREATES) + quiet, "stockroom")
    tag = uuid.uuid4().hex[:8]
    name = f"checker{tag}"
    names = {**handler_names(tag), "<caller>": name, "<service>.<method>": "stockroom.check_stock"}
    granted = acls(HANDLER, names, KIT_CREATES) + acls(CALLER, names, "fail-fast") + quiet
    responder_env = use_principal(monkeypatch, info, responder)
    use_principal(monkeypatch, info, add_principal(info, granted, "checker"))
    svc = checker(name, names["<in>"], names["<out>"], names["<group>"])
    produce_orders = [{"value": CODEC.encode(order(i)), "key": f"k{i}".encode()} for i in range(5)]

    async def scenario() -> Runtime:
        runtime = Runtime(svc, settings_for())
        await runtime.start()
        task = asyncio.create_task(runtime.run())
        try:
            await asyncio.to_thread(produce, info, names["<in>"], produce_orders)
            deadline = time.monotonic() + 30
            while runtime.dispatcher.handled < 5 and not task.done():
                assert time.monotonic() < deadline, f"handled {runtime.dispatcher.handled} of 5"
                await asyncio.sleep(0.05)
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 60)
        return runtime

    with stockroom_process(responder_env):
        runtime = asyncio.run(scenario())
    assert runtime.dispatcher.dead_lettered == 0
    assert len(read_all(info, names["<out>"])) == 5
    topics = AdminClient(info.client_config()).list_topics(timeout=10).topics
    assert [t for t in topics if t.startswith(f"_kit.replies.{name}-")] == []
    assert authorization_warnings(caplog) == []


def test_a_responder_without_write_on_reply_topics_says_so(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails while Runtime._topic_exists takes the reply topic's TOPIC_AUTHORIZATION_FAILED
    metadata for a missing topic: the responder logs `reply topic ... is gone (requester
    stopped); reply dropped`, and the caller waits out its deadline."""
    info = kit_topics
    granted = [a for a in acls(RESPONDER, STOCKROOM, KIT_CREATES) if a.pattern != "prefixed"]
    responder = add_principal(info, granted, "stockroom")
    caller_names = {"<service>.<method>": "stockroom.check_stock", "<caller>": "client"}
    caller = add_principal(info, acls(CALLER, caller_names, "fail-fast"), "client")
    responder_env = use_principal(monkeypatch, info, responder)
    use_principal(monkeypatch, info, caller)

    async def call() -> str:
        async with Client(settings_for()) as client:
            with pytest.raises(RequestTimeout):
                await client.request(
                    "stockroom.check_stock",
                    CheckStock(sku="tea", quantity=1),
                    reply=StockLevel,
                    timeout=4,
                )
            return client.requester.reply_topic

    with stockroom_process(responder_env) as out:
        reply_topic = asyncio.run(call())
        with contextlib.suppress(TimeoutError):
            out.wait(
                lambda lines: next((x for x in lines if reply_topic in x), None), 5, "the reply"
            )
    said = [line for line in out.lines if reply_topic in line]
    assert any("not authorized" in line for line in said), "".join(said or out.lines)


# --- exactly-once ---------------------------------------------------------------------------


def test_an_exactly_once_service_runs_with_its_documented_acls(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    names = handler_names()
    granted = (
        acls(HANDLER, names, KIT_CREATES) + acls(EXACTLY_ONCE, names) + acls(QUIET, {}, "quiet")
    )
    use_principal(monkeypatch, kit_topics, add_principal(kit_topics, granted, "eos"))
    run = run_invoicing(kit_topics, names, create_topics=True, exactly_once=True)
    assert run.problems == [], f"{run.problems}\n{authorization_warnings(caplog)}"
    assert run.runtime is not None and run.runtime.transactions is not None
    assert run.runtime.transactions.committed > 0


def test_an_exactly_once_service_without_its_transactional_id_acl_names_it(
    kit_topics: BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails while kit.exactly_once.Transactions lets init_transactions' KafkaException
    (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) through: `kit run` prints a traceback."""
    names = handler_names()
    principal = add_principal(kit_topics, acls(HANDLER, names, KIT_CREATES), "eos")
    use_principal(monkeypatch, kit_topics, principal)
    run = run_invoicing(kit_topics, names, create_topics=True, exactly_once=True)
    assert run.error is not None and run.runtime is None, run.problems
    assert isinstance(run.error, KitError), f"{type(run.error).__name__}: {run.error}"
    wanted = f"transactional id 'kit-{names['<group>']}-"
    assert _says([str(run.error)], principal.user, wanted), str(run.error)
