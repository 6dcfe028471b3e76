"""How far kit's consumers fetch ahead: bounded by default, each bound a KIT_KAFKA_* away."""

from __future__ import annotations

import pytest

from kit.config import load_settings
from kit.transport.kafka import PREFETCH, consumer_config, make_consumer


def test_consumers_fetch_a_bounded_way_ahead_and_refetch_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("QUEUED_MIN_MESSAGES", "QUEUED_MAX_MESSAGES_KBYTES", "FETCH_QUEUE_BACKOFF_MS"):
        monkeypatch.delenv(f"KIT_KAFKA_{name}", raising=False)
    config = consumer_config(load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"}), "g")
    # librdkafka's defaults (100,000 records per partition, 64 MiB, 1 s back-off) held most
    # of a backlog in memory; with small queues, the 1 s back-off halved the throughput
    assert config["queued.min.messages"] == 5_000
    assert config["queued.max.messages.kbytes"] == 16_384
    assert config["fetch.queue.backoff.ms"] == 10
    assert PREFETCH.items() <= config.items()
    consumer = make_consumer(load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"}), "g")
    consumer.close()  # librdkafka accepts the combination (it checks at creation)


def test_each_prefetch_bound_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_KAFKA_QUEUED_MIN_MESSAGES", "100000")  # read when a client is made
    monkeypatch.setenv("KIT_KAFKA_QUEUED_MAX_MESSAGES_KBYTES", "65536")
    monkeypatch.setenv("KIT_KAFKA_FETCH_QUEUE_BACKOFF_MS", "1000")
    config = consumer_config(load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"}), "g")
    assert config["queued.min.messages"] == "100000"
    assert config["queued.max.messages.kbytes"] == "65536"
    assert config["fetch.queue.backoff.ms"] == "1000"
