"""Local single-node Apache Kafka (KRaft) broker: cached jars, processes, optional SASL and ACLs."""

from kit.broker.jars import KAFKA_VERSION, ensure_jars, jars_dir, kafka_version
from kit.broker.local import (
    ADMIN_USER,
    DEFAULT_PORT,
    SASL_MECHANISM,
    BrokerInfo,
    add_acls,
    add_scram_user,
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
    "ADMIN_USER",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "SASL_MECHANISM",
    "BrokerInfo",
    "add_acls",
    "add_scram_user",
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
