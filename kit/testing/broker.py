"""Find a Kafka broker for tests: KIT_BOOTSTRAP_SERVERS, a testcontainer, or the local broker."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kit.broker import local
from kit.config import load_settings, load_tool_settings

__all__ = ["KAFKA_IMAGE", "ResolvedBroker", "docker_available", "resolve_broker"]

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
"""Image for the testcontainer (``KIT_KAFKA_IMAGE`` overrides).

testcontainers' ``KafkaContainer`` drives the Confluent image's start scripts, so an
``apache/kafka`` image does not work with it; CP 7.9 runs Apache Kafka 3.9 in KRaft mode.
"""

# The same single-node settings the local broker uses (see kit.broker.local.server_properties).
_CONTAINER_ENV = {
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "4",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    "KAFKA_LOG_CLEANER_BACKOFF_MS": "1000",
    "KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS": "5000",
}


@dataclass
class ResolvedBroker:
    """A broker tests can use, where it came from, and how to release it."""

    bootstrap_servers: str
    source: Literal["env", "testcontainers", "local"]
    close: Callable[[], None]


def _nothing() -> None:
    return None


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within ``timeout`` seconds."""
    host = os.environ.get("DOCKER_HOST", "").strip()
    if not host and not os.path.exists("/var/run/docker.sock"):
        return False  # nothing to ask (and docker-py would leak a socket finding that out)
    try:
        import docker

        client = docker.from_env(timeout=max(int(timeout), 1))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_container() -> ResolvedBroker:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.10 kept it in testcontainers.kafka
        from testcontainers.kafka import KafkaContainer

    image = load_tool_settings().kafka_image or KAFKA_IMAGE
    # Any: one of two KafkaContainer classes (by testcontainers version), of an optional package
    container: Any = KafkaContainer(image).with_kraft()
    for key, value in _CONTAINER_ENV.items():
        container.with_env(key, value)
    container.start(timeout=120)
    return ResolvedBroker(container.get_bootstrap_server(), "testcontainers", container.stop)


def resolve_broker() -> ResolvedBroker:
    """Return a broker for tests, trying in order:

    1. ``KIT_BOOTSTRAP_SERVERS`` (closing it does nothing);
    2. a Kafka testcontainer, when a Docker engine answers (closing stops it);
    3. kit's local broker: the one running from ``KIT_BROKER_DIR`` (closing does
       nothing), else one started here. With ``KIT_KEEP_BROKER`` or ``KIT_BROKER_DIR``
       set, it is started on that data dir and closing stops it unless
       ``KIT_KEEP_BROKER`` is set; with neither, it is started on a fresh temporary data
       dir, which closing stops and deletes.
    """
    env = (load_settings().bootstrap_servers or "").strip()
    if env:
        return ResolvedBroker(env, "env", _nothing)
    if docker_available():
        return _start_container()
    running = local.status()
    if running is not None:
        return ResolvedBroker(running.bootstrap_servers, "local", _nothing)
    tools = load_tool_settings()
    if tools.keep_broker or tools.broker_dir is not None:
        info = local.start()
        return ResolvedBroker(info.bootstrap_servers, "local", _stop_unless_kept)
    return _start_throwaway()


def _stop_unless_kept() -> None:
    if not load_tool_settings().keep_broker:
        local.stop()


def _start_throwaway() -> ResolvedBroker:
    """Start the local broker on a fresh data dir (KIT_BROKER_DIR for this process and its
    children), which closing stops and deletes. Topics that tests make are never deleted,
    so a data dir kept from run to run would grow until the broker runs out of file
    descriptors."""
    data_dir = tempfile.mkdtemp(prefix="kit-test-broker-")
    os.environ["KIT_BROKER_DIR"] = data_dir

    def close() -> None:
        try:
            local.stop()
        finally:
            if os.environ.get("KIT_BROKER_DIR") == data_dir:
                del os.environ["KIT_BROKER_DIR"]
            shutil.rmtree(data_dir, ignore_errors=True)

    try:
        info = local.start()
    except BaseException:
        close()
        raise
    return ResolvedBroker(info.bootstrap_servers, "local", close)
