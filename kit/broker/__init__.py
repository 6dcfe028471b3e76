"""Local single-node Apache Kafka (KRaft) broker: jars from Maven Central, process management."""

from kit.broker.jars import KAFKA_VERSION, ensure_jars, jars_dir, kafka_version
from kit.broker.local import (
    DEFAULT_PORT,
    BrokerInfo,
    broker_dir,
    cli_main,
    ensure_running,
    running_address,
    server_properties,
    start,
    status,
    stop,
)

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerInfo",
    "broker_dir",
    "cli_main",
    "ensure_jars",
    "ensure_running",
    "jars_dir",
    "kafka_version",
    "running_address",
    "server_properties",
    "start",
    "status",
    "stop",
]
