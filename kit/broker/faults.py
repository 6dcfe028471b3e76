"""Faults on a local cluster: SIGKILL one node's JVM, restart it, wait until all is in sync."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kit.broker.cluster import node_command, status, wait_ready
from kit.broker.files import forget
from kit.broker.info import BrokerInfo, NodeInfo
from kit.broker.jars import ensure_jars, locked, require_java
from kit.broker.process import POLL, admin, launch, port_free, reap, wait_exit
from kit.errors import BrokerError

__all__ = ["kill_node", "restart_node", "wait_in_sync"]


def _running(data_dir: Path, node_id: int) -> tuple[BrokerInfo, NodeInfo]:
    info = status(data_dir, probe=False)
    if info is None or not info.nodes:
        raise BrokerError(f"no cluster runs from {data_dir}; run `kit broker start --brokers 3`")
    for node in info.nodes:
        if node.node_id == node_id:
            return info, node
    known = ", ".join(str(node.node_id) for node in info.nodes)
    raise BrokerError(f"the cluster in {data_dir} has no node {node_id} (its nodes: {known})")


def kill_node(data_dir: Path, node_id: int) -> int:
    """SIGKILL node ``node_id``'s JVM (no controlled shutdown) and return its pid once it exited.

    The node's data stays; :func:`restart_node` brings it back.
    """
    _, node = _running(data_dir, node_id)
    if node.pid is None:
        raise BrokerError(f"node {node_id} of the cluster in {data_dir} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, signal.SIGKILL)
    if not wait_exit(node.pid, time.monotonic() + 10):
        raise BrokerError(f"node {node_id} (pid {node.pid}) did not exit after SIGKILL")
    reap(node.pid)
    forget(node.data_dir, node.pid)
    return node.pid


def restart_node(
    data_dir: Path, node_id: int, *, timeout: float = 120, in_sync: bool = True
) -> NodeInfo:
    """Start node ``node_id`` again on its data and return it once it answers and the
    metadata lists every broker; with ``in_sync``, also once every partition is fully
    replicated again (:func:`wait_in_sync`). A node that runs is returned as it is.
    """
    info, node = _running(data_dir, node_id)
    if node.pid is not None:
        return node
    with locked(data_dir / ".lock", timeout + 30, "starting the broker"):
        for port in (node.port, node.controller_port):
            if not port_free(port):
                raise BrokerError(f"port {port} of node {node_id} is taken by another process")
        java, libs = require_java(), ensure_jars(info.version)
        deadline = time.monotonic() + timeout
        proc = launch(node_command(java, libs, data_dir, node_id), node.data_dir, append=True)
        try:
            wait_ready([proc], info, (node,), deadline, timeout)
        except BaseException:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            reap(proc.pid)
            forget(node.data_dir, proc.pid)
            raise
    if in_sync:
        wait_in_sync(info, timeout=max(deadline - time.monotonic(), 1.0))
    return NodeInfo(node.node_id, node.port, node.controller_port, proc.pid, node.data_dir)


def wait_in_sync(info: BrokerInfo, *, timeout: float = 120) -> None:
    """Wait until every partition of every topic has all its replicas in sync."""
    client = admin(info.bootstrap_servers, info.client_config())
    deadline = time.monotonic() + timeout
    behind: list[str] = []
    while True:
        with contextlib.suppress(Exception):
            metadata = client.list_topics(timeout=5)
            behind = [
                f"{topic.topic}[{partition.id}]"
                for topic in metadata.topics.values()
                for partition in topic.partitions.values()
                if sorted(partition.isrs) != sorted(partition.replicas)
            ]
            if not behind:
                return
        if time.monotonic() >= deadline:
            shown = ", ".join(behind[:5]) + (" ..." if len(behind) > 5 else "")
            raise BrokerError(f"partitions still under-replicated after {timeout:.0f}s: {shown}")
        time.sleep(POLL)
