"""kit's liveness limits outlast a cluster's failover (tests/fault/test_cluster.py measures it).

A broker that dies without a word is fenced after the cluster's broker.session.timeout.ms
(Kafka's default 9 s); until then no acks=all write to its partitions lands and its group
coordinators do not move. A consumer session or a registry TTL shorter than that turns one
broker's death into a second outage: partitions dropped and rejoined, live services listed
as gone.
"""

from __future__ import annotations

import pytest

from kit.config import load_settings
from kit.registry.model import load_registry_config
from kit.transport.kafka import consumer_config

BROKER_SESSION_TIMEOUT_S = 9.0  # Kafka's default broker.session.timeout.ms


def test_a_consumer_keeps_its_partitions_through_a_coordinator_failover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KIT_KAFKA_SESSION_TIMEOUT_MS", raising=False)
    config = consumer_config(load_settings({"KIT_BOOTSTRAP_SERVERS": "x:1"}), "g")
    # at 10 s, a responder whose coordinator was killed dropped its partitions: 19-21 s of
    # failed calls instead of ~10 s
    assert config["session.timeout.ms"] >= 2 * BROKER_SESSION_TIMEOUT_S * 1000


def test_the_registry_keeps_live_instances_through_a_failover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KIT_REGISTRY_TTL", raising=False)
    monkeypatch.delenv("KIT_REGISTRY_HEARTBEAT", raising=False)
    config = load_registry_config({})
    # at 6 s, every instance looked dead to callers while a killed broker was being fenced
    assert config.ttl > BROKER_SESSION_TIMEOUT_S + 2 * config.heartbeat
