"""What a running local broker or cluster is: where clients connect, its processes and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kit.broker.process import HOST
from kit.broker.properties import CLUSTER_REPLICATION
from kit.broker.sasl import ADMIN_USER, SASL_MECHANISM

__all__ = ["BrokerInfo", "NodeInfo"]


@dataclass(frozen=True)
class NodeInfo:
    """One node (a combined broker and KRaft controller) of a local cluster."""

    node_id: int
    port: int
    """The client port (``127.0.0.1:<port>``)."""
    controller_port: int
    pid: int | None
    """The node's JVM, or None while the node is down."""
    data_dir: Path
    """The node's folder: ``server.properties``, ``broker.pid``, ``broker.log``, ``kraft-logs``."""

    @property
    def alive(self) -> bool:
        """True while the node's JVM runs."""
        return self.pid is not None

    @property
    def address(self) -> str:
        """The node's client address, ``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker (or cluster): where clients connect, its process and its files.

    For a cluster, ``bootstrap_servers`` lists every node, ``nodes`` describes each one,
    ``port`` is node 1's client port and ``pid`` the first live node's JVM.
    """

    bootstrap_servers: str
    pid: int
    port: int
    version: str
    data_dir: Path
    sasl: bool = False
    """True when clients must authenticate (SASL_PLAINTEXT, SCRAM-SHA-512) and ACLs apply."""
    admin_password: str | None = field(default=None, repr=False)
    """The super user's password (SASL only)."""
    nodes: tuple[NodeInfo, ...] = ()
    """The nodes of a cluster (empty for a single broker)."""

    @property
    def brokers(self) -> int:
        """How many brokers this is: 1, or the cluster's size."""
        return len(self.nodes) or 1

    @property
    def replication(self) -> int:
        """The replication factor topics on this broker should get (``KIT_TOPIC_REPLICATION``)."""
        return min(CLUSTER_REPLICATION, self.brokers)

    def client_config(self) -> dict[str, str]:
        """librdkafka settings that connect to this broker (as the super user if SASL)."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl:
            config.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": SASL_MECHANISM,
                    "sasl.username": ADMIN_USER,
                    "sasl.password": self.admin_password or "",
                }
            )
        return config

    def client_env(self) -> dict[str, str]:
        """The KIT_* variables that make kit use this broker (as the super user if SASL);
        for a cluster, ``KIT_TOPIC_REPLICATION`` too."""
        env = {"KIT_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if self.nodes:
            env["KIT_TOPIC_REPLICATION"] = str(self.replication)
        for key, value in self.client_config().items():
            if key != "bootstrap.servers":
                env["KIT_KAFKA_" + key.upper().replace(".", "_")] = value
        return env
