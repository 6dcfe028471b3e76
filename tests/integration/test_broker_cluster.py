"""A local three-broker KRaft cluster (`kit broker start --brokers 3`) on real Kafka: replicated
topics, and a broker SIGKILLed mid-stream costs an acks=all producer nothing."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from kit import load_settings
from kit.broker import local
from kit.broker.process import free_port
from kit.cli import main as kit_main
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client

pytestmark = pytest.mark.integration

RECORDS = 20_000


def broker_cli(*args: str) -> int:
    """`kit broker ARGS...` through the kit CLI; wrong usage counts as exit 2."""
    try:
        return kit_main(["broker", *args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _free_run(length: int) -> int:
    """A port p with p .. p+length-1 free: 3 client ports, then 3 controller ports (below
    the ephemeral range: a connection could take one while the brokers start)."""
    return free_port(length)


@contextlib.contextmanager
def _cluster_env(data_dir: Path) -> Iterator[None]:
    """Point kit.broker.local at our cluster's data dir, only for the calls inside (the
    session broker other tests use must not see it)."""
    saved = {k: os.environ.get(k) for k in ("KIT_BROKER_DIR", "KIT_BROKER_PORT")}
    os.environ["KIT_BROKER_DIR"] = str(data_dir)
    os.environ.pop("KIT_BROKER_PORT", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.BrokerInfo]:
    """A three-node cluster of this module only: its own data dir and free ports."""
    data_dir = tmp_path_factory.mktemp("cluster")
    port = _free_run(6)
    started = time.monotonic()
    with _cluster_env(data_dir):
        info = local.start(port, brokers=3, timeout=180)
    print(f"\ncluster of 3 started in {time.monotonic() - started:.1f}s (format included)")
    try:
        yield info
    finally:
        stopping = time.monotonic()
        with _cluster_env(data_dir):
            assert local.stop() is True
            assert local.status() is None
        print(f"\ncluster stopped in {time.monotonic() - stopping:.1f}s")


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def _broker_ids(admin: AdminClient) -> set[int]:
    return set(admin.list_topics(timeout=10).brokers)


def _create(admin: AdminClient, topic: str, partitions: int) -> None:
    for future in admin.create_topics([NewTopic(topic, partitions, 3)]).values():
        future.result(timeout=30)

    def ready() -> bool:
        found = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
        return len(found) == partitions and all(p.leader >= 0 and len(p.isrs) == 3 for p in found)

    _wait(ready, 30, f"{topic} fully replicated")


def _read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic``, read from the beginning to the end offsets."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}"}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            out += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        return out
    finally:
        consumer.close()


def test_three_brokers_and_status(
    cluster: local.BrokerInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = AdminClient(cluster.client_config())
    assert _broker_ids(admin) == {1, 2, 3}
    assert len(cluster.bootstrap_servers.split(",")) == 3
    with _cluster_env(cluster.data_dir):
        assert local.status() == cluster
        assert local.node_pids() == {n.node_id: n.pid for n in cluster.nodes}
        assert all(node.alive for node in local.nodes())
        assert broker_cli("status") == 0
    out = capsys.readouterr().out
    assert "(3 brokers, 3 alive" in out
    assert f"export KIT_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}\n" in out
    assert "export KIT_TOPIC_REPLICATION=3\n" in out
    for node in cluster.nodes:
        assert (cluster.data_dir / f"node-{node.node_id}" / "kraft-logs").is_dir()


def test_kit_creates_replicated_topics(cluster: local.BrokerInfo) -> None:
    env = {k: v for k, v in cluster.client_env().items() if k != "KIT_TOPIC_REPLICATION"}
    settings = load_settings(env)  # the default: the cluster's default.replication.factor
    assert settings.topic_replication == -1
    topic = f"t-cluster-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(topic, 3, settings.topic_replication)
    assert ensure_topics(admin_client(settings), [spec]) == [topic]
    admin = AdminClient(cluster.client_config())
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    assert [len(p.replicas) for p in partitions] == [3, 3, 3]
    resource = ConfigResource(ResourceType.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["min.insync.replicas"].value == "2"

    producer = Producer({**cluster.client_config(), "acks": "all", "enable.idempotence": True})
    for i in range(100):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    values = sorted(m.value() for m in _read_all(cluster.bootstrap_servers, topic))
    assert values == sorted(f"v{i}".encode() for i in range(100))


def test_a_broker_killed_mid_produce_loses_nothing(cluster: local.BrokerInfo) -> None:
    admin = AdminClient(cluster.client_config())
    topic = f"t-cluster-kill-{uuid.uuid4().hex[:8]}"
    _create(admin, topic, 6)
    victim = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader

    delivered: list[int] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is None:
            delivered.append(1)
        else:
            errors.append(error)

    producer = Producer(
        {**cluster.client_config(), "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    began = time.monotonic()
    for i in range(RECORDS):
        producer.produce(
            topic, key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery
        )
        producer.poll(0)
        if i == RECORDS // 4:  # some confirmed, some in flight: kill the leader of partition 0
            deadline = time.monotonic() + 30
            while len(delivered) < 1000 and time.monotonic() < deadline:
                producer.poll(0.001)
            in_flight = i + 1 - len(delivered)
            with _cluster_env(cluster.data_dir):
                killed_pid = local.kill_node(victim)
                assert local.node_pids()[victim] is None
            killed_at = time.monotonic()
    assert producer.flush(180) == 0
    recovered = time.monotonic() - killed_at
    assert errors == []
    assert len(delivered) == RECORDS
    assert killed_pid == {node.node_id: node.pid for node in cluster.nodes}[victim]

    # Two nodes serve: the victim is fenced out of the metadata, the rest reads and writes.
    _wait(lambda: _broker_ids(admin) == {1, 2, 3} - {victim}, 30, "the victim fenced")
    records = _read_all(cluster.bootstrap_servers, topic)
    values = [m.value() for m in records]
    assert len(values) == RECORDS, f"{len(values)} of {RECORDS} records read back"
    assert set(values) == {f"v{i}".encode() for i in range(RECORDS)}  # none lost, none twice
    for message in records:
        assert message.key() == b"k" + message.value()[1:]
    leaders = {
        p.leader for p in admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    }
    assert victim not in leaders
    for i in range(100):
        producer.produce(topic, key=b"after", value=f"after-{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0 and errors == []
    assert len(_read_all(cluster.bootstrap_servers, topic)) == RECORDS + 100
    print(
        f"\n{RECORDS} records, node {victim} killed after {RECORDS // 4} sent ({in_flight} "
        "unconfirmed): all confirmed "
        f"{recovered:.1f}s after the kill, {time.monotonic() - began:.1f}s in all"
    )

    # Back to three: the restarted node catches up and rejoins every ISR.
    restarting = time.monotonic()
    with _cluster_env(cluster.data_dir):
        node = local.restart_node(victim, timeout=120)
        assert node.alive and local.node_pids()[victim] == node.pid
    print(f"node {victim} back and in sync in {time.monotonic() - restarting:.1f}s")
    assert _broker_ids(admin) == {1, 2, 3}
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    assert all(len(p.isrs) == 3 for p in partitions)


def test_kit_broker_start_brings_back_a_killed_node(
    cluster: local.BrokerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    with _cluster_env(cluster.data_dir):
        assert broker_cli("kill", "3") == 0
        assert local.running_replication() == 3
        assert broker_cli("status") == 0
        assert "  node 3: port " in capsys.readouterr().out  # no pid: down
        started = time.monotonic()
        assert broker_cli("start") == 0
        print(f"\nkit broker start restarted node 3 in {time.monotonic() - started:.1f}s")
        assert all(node.alive for node in local.nodes())
    assert "cluster of 3 brokers ready" in capsys.readouterr().out
    admin = AdminClient(cluster.client_config())
    _wait(lambda: _broker_ids(admin) == {1, 2, 3}, 30, "three brokers again")
