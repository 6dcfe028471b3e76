"""The ``server.properties`` of a local single node and of each node of a local cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from kit.broker.process import HOST
from kit.broker.sasl import sasl_settings

__all__ = ["CLUSTER_MIN_ISR", "CLUSTER_REPLICATION", "node_properties", "server_properties"]

CLUSTER_REPLICATION = 3
"""Replication factor of a local cluster's internal topics and of topics created without one."""

CLUSTER_MIN_ISR = 2
"""``min.insync.replicas`` of a local cluster: an ``acks=all`` write survives one node's loss."""


def _listeners(port: int, controller_port: int, admin_password: str | None) -> dict[str, str]:
    client = "SASL_PLAINTEXT" if admin_password is not None else "PLAINTEXT"
    return {
        "listeners": f"{client}://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{client}://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
    }


def _common(replication: int, min_isr: int) -> dict[str, str]:
    return {
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "auto.create.topics.enable": "false",
        "log.cleaner.backoff.ms": "1000",
        "log.retention.check.interval.ms": "5000",
    }


def _render(settings: Mapping[str, str]) -> str:
    lines = ["# Written by kit (kit.broker); rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def server_properties(
    port: int, controller_port: int, data_dir: Path, admin_password: str | None = None
) -> str:
    """Return the ``server.properties`` text of a combined broker+controller single node.

    With ``admin_password`` the client listener is SASL_PLAINTEXT (SCRAM-SHA-512) with ACLs,
    and the broker authenticates to itself as the super user ``admin``.
    """
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        **_listeners(port, controller_port, admin_password),
        "log.dirs": str(data_dir / "kraft-logs"),
        **_common(1, 1),
    }
    if admin_password is not None:
        settings.update(sasl_settings(admin_password))
    return _render(settings)


def node_properties(
    node_id: int,
    ports: Sequence[int],
    controller_ports: Sequence[int],
    node_dir: Path,
    admin_password: str | None = None,
) -> str:
    """Return the ``server.properties`` text of node ``node_id`` (1-based) of a local cluster.

    Every node is a combined broker+controller; ``ports[i]`` and ``controller_ports[i]`` are
    node ``i + 1``'s client and controller ports. The controllers form one dynamic KRaft
    quorum (``controller.quorum.bootstrap.servers`` lists all of them; the voters are fixed
    when the storage is formatted with ``--initial-controllers``). Internal topics and topics
    created without a replication factor get :data:`CLUSTER_REPLICATION` replicas and
    :data:`CLUSTER_MIN_ISR` in-sync replicas.
    """
    if len(ports) != len(controller_ports) or not 0 < node_id <= len(ports):
        raise ValueError(
            f"node {node_id} of {len(ports)} ports, {len(controller_ports)} controllers"
        )
    port, controller_port = ports[node_id - 1], controller_ports[node_id - 1]
    replication = min(CLUSTER_REPLICATION, len(ports))
    min_isr = min(CLUSTER_MIN_ISR, replication)
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.bootstrap.servers": ",".join(f"{HOST}:{p}" for p in controller_ports),
        **_listeners(port, controller_port, admin_password),
        "log.dirs": str(node_dir / "kraft-logs"),
        **_common(replication, min_isr),
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
    }
    if admin_password is not None:
        settings.update(sasl_settings(admin_password))
    return _render(settings)
