"""The local broker launcher against a real Apache Kafka: start, use, status, stop."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kit.broker import local
from kit.broker.process import free_port

pytestmark = pytest.mark.integration


def _free_port() -> int:
    return free_port()  # below the ephemeral range: no connection takes it meanwhile


def test_start_use_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.delenv("KIT_BROKER_PORT", raising=False)
    port = _free_port()
    try:
        info = local.start(port, timeout=120)
        assert info.bootstrap_servers == f"127.0.0.1:{port}"
        assert info.data_dir == tmp_path / "broker"
        assert local.status() == info
        assert local.running_address() == info.bootstrap_servers
        assert local.start(port) == info  # idempotent: same process
        assert local.ensure_running() == info

        topic = f"kit-broker-test-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": info.bootstrap_servers})
        for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(timeout=30)
        producer = Producer({"bootstrap.servers": info.bootstrap_servers})
        producer.produce(topic, value=b"hello", key=b"k")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": info.bootstrap_servers,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            received = None
            while received is None and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    received = message
        finally:
            consumer.close()
        assert received is not None, "no message within 30s"
        assert (received.key(), received.value()) == (b"k", b"hello")
    finally:
        stopped = local.stop()
    assert stopped is True
    assert local.status() is None
    assert local.stop() is False
    assert not (tmp_path / "broker" / "broker.pid").exists()
    assert (tmp_path / "broker" / "kraft-logs" / "meta.properties").is_file()  # data stays
