"""Start, check and stop kit's local Apache Kafka (KRaft): one node, or a three-node cluster.

This is the entry point of the package: every public name of :mod:`kit.broker` is importable
from here. A single node is run by :mod:`kit.broker.single`; ``brokers=3`` (``kit broker start
--brokers 3``) runs the replicated cluster of :mod:`kit.broker.cluster`, and ``sasl=True`` adds
SASL/SCRAM and ACLs (:mod:`kit.broker.sasl`). A data dir keeps the mode it was formatted
with: it restarts as a single node or as a cluster, with or without SASL, as it was made.

For fault tests on a cluster: :func:`nodes` (or :func:`node_pids`) lists each node's pid and
port, :func:`kill_node` SIGKILLs one node's JVM, :func:`restart_node` brings it back, and
:func:`stop` stops them all.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from kit.broker import cluster, faults, sasl, single
from kit.broker.cluster import CLUSTER_SIZE
from kit.broker.files import broker_dir, forget, read_pid, read_state, state_file
from kit.broker.info import BrokerInfo, NodeInfo
from kit.broker.jars import KAFKA_VERSION, locked
from kit.broker.jars import java_command as java_command  # old home: kept importable
from kit.broker.process import answers, is_our_broker, terminate
from kit.broker.properties import server_properties
from kit.broker.sasl import ADMIN_USER, SASL_MECHANISM, add_acls, add_scram_user
from kit.broker.sasl import _admin_password as _admin_password  # old home: kept importable
from kit.config import load_tool_settings
from kit.errors import BrokerError, ConfigError

__all__ = [
    "ADMIN_USER",
    "CLUSTER_SIZE",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "SASL_MECHANISM",
    "BrokerInfo",
    "NodeInfo",
    "add_acls",
    "add_scram_user",
    "broker_dir",
    "ensure_running",
    "kill_node",
    "node_pids",
    "nodes",
    "restart_node",
    "running_address",
    "running_replication",
    "server_properties",
    "start",
    "status",
    "stop",
    "wait_in_sync",
]

DEFAULT_PORT = 9092
"""Client port of the local broker unless ``KIT_BROKER_PORT`` or ``port=`` says otherwise."""


def _requested_port(port: int | None) -> int:
    if port is None:
        port = load_tool_settings().broker_port or DEFAULT_PORT
    if not 0 < port < 65536:
        raise ConfigError("port", f"must be between 1 and 65535, got {port}")
    return port


def _single_formatted(data_dir: Path) -> bool:
    return (data_dir / "kraft-logs" / "meta.properties").is_file()


def _size(data_dir: Path, brokers: int | None) -> int:
    """How many nodes this start runs: ``brokers``, or what the data dir was formatted as."""
    if brokers is not None and brokers not in (1, CLUSTER_SIZE):
        raise ConfigError("brokers", f"must be 1 or {CLUSTER_SIZE}, got {brokers}")
    formatted = cluster.formatted_size(data_dir)
    if brokers is None:
        return formatted or (CLUSTER_SIZE if cluster.is_cluster(data_dir) else 1)
    if brokers == 1 and formatted:
        raise BrokerError(
            f"the broker data in {data_dir} was formatted as a {formatted}-broker cluster; "
            f"start it with --brokers {formatted}, or set KIT_BROKER_DIR to another folder"
        )
    if brokers > 1 and _single_formatted(data_dir):
        raise BrokerError(
            f"the broker data in {data_dir} was formatted as a single broker; "
            "set KIT_BROKER_DIR to another folder for a cluster"
        )
    return brokers


def status(*, probe: bool = True) -> BrokerInfo | None:
    """Return the local broker's info if it runs and answers, else None.

    Stale pid and state files left by a broker that died are removed. `probe=False`
    skips the metadata request: the process runs and its state file gives the address.
    A cluster counts as running while any of its nodes runs; ``nodes`` tells which.
    """
    data_dir = broker_dir()
    if cluster.is_cluster(data_dir):
        return cluster.status(data_dir, probe=probe)
    pid = read_pid(data_dir)
    if pid is None or not is_our_broker(pid, data_dir):
        if pid is not None or state_file(data_dir).exists():
            with contextlib.suppress(BrokerError):  # skip if someone is starting it right now
                with locked(data_dir / ".lock", 0, "starting the broker"):
                    forget(data_dir, pid)
        return None
    state = read_state(data_dir)
    if state is None:
        return None  # still starting
    info = single.info_from_state(data_dir, pid, state)
    if probe and not answers(info.bootstrap_servers, timeout=3.0, config=info.client_config()):
        return None  # still starting, or hung
    return info


sasl.default.status = status  # add_scram_user / add_acls act on this broker by default


def running_address() -> str | None:
    """Return the running local broker's bootstrap address, or None.

    Cheap (a process check and a file read, no network): it is called for every client
    the kit makes without KIT_BOOTSTRAP_SERVERS; the client's own connection reports a
    broker that runs but does not answer.
    """
    info = status(probe=False)
    return info.bootstrap_servers if info else None


def start(
    port: int | None = None,
    *,
    timeout: float = 120,
    sasl: bool | None = None,
    brokers: int | None = None,
) -> BrokerInfo:
    """Start the local broker, or return the one already running from the same data dir.

    ``port`` defaults to ``KIT_BROKER_PORT`` or 9092. ``timeout`` bounds the wait for the
    broker to answer requests; the one-time jar download has its own deadline (15 min).
    ``sasl=True`` runs it with SASL/SCRAM-SHA-512 and ACLs (see :mod:`kit.broker.sasl`),
    ``False`` without; ``None`` (the default) keeps the mode its data was formatted with,
    plain for new data. ``brokers=3`` runs a replicated three-node cluster on client ports
    ``port`` to ``port + 2`` (see :mod:`kit.broker.cluster`), ``1`` a single node; ``None``
    keeps what the data was formatted as, one node for new data. Nodes of a running cluster
    that are down are started again. Raises BrokerError when
    Java is missing, a port is taken, the data dir was formatted in another mode, or the
    broker fails.
    """
    data_dir = broker_dir()
    wanted = _requested_port(port)
    size = _size(data_dir, brokers)
    running = status()
    if running is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        with locked(data_dir / ".lock", timeout + 30, "starting the broker"):
            running = status()  # someone else may have started it while we waited
            if running is None:
                if size > 1:
                    return cluster.start(
                        data_dir, wanted, timeout=timeout, sasl=sasl, port_given=port is not None
                    )
                (data_dir / "cluster.json").unlink(missing_ok=True)  # an unfinished cluster
                return single.start(data_dir, wanted, timeout, sasl)
    if (
        (port is not None and running.port != port)
        or (sasl is not None and running.sasl != sasl)
        or (brokers is not None and running.brokers != brokers)
    ):
        mode = "with SASL" if running.sasl else "without SASL"
        what = f"a {running.brokers}-broker cluster" if running.nodes else "a broker"
        raise BrokerError(
            f"{what} from {data_dir} already runs at {running.bootstrap_servers} ({mode}); "
            "stop it first or set KIT_BROKER_DIR"
        )
    down = [node.node_id for node in running.nodes if not node.alive]
    for node_id in down:  # a degraded cluster: bring back the nodes that are down
        faults.restart_node(data_dir, node_id, timeout=timeout, in_sync=False)
    return (status() or running) if down else running


def stop(timeout: float = 30) -> bool:
    """Stop the local broker, or every node of a cluster (SIGTERM, then SIGKILL after
    ``timeout`` s).

    Returns True if a broker was running. Its data stays for the next start.
    """
    data_dir = broker_dir()
    if cluster.is_cluster(data_dir):
        return cluster.stop(data_dir, timeout)
    pid = read_pid(data_dir)
    if pid is None or not is_our_broker(pid, data_dir):
        forget(data_dir, pid)
        return False
    terminate([pid], timeout)
    forget(data_dir, pid)
    return True


def running_replication() -> int | None:
    """Return the replication factor topics on the running local broker should get (3 on a
    cluster, 1 on a single node), or None if none runs. As cheap as :func:`running_address`."""
    info = status(probe=False)
    return info.replication if info else None


def ensure_running() -> BrokerInfo:
    """Return the running local broker, starting it first if needed."""
    return status() or start()


# -- nodes of a cluster, for fault tests --------------------------------------------------


def nodes() -> tuple[NodeInfo, ...]:
    """Each node of the running local cluster: id, client and controller port, pid (None
    while down) and folder. Raises BrokerError if no cluster runs from the data dir."""
    info = status(probe=False)
    if info is None or not info.nodes:
        raise BrokerError(
            f"no cluster runs from {broker_dir()}; run `kit broker start --brokers 3`"
        )
    return info.nodes


def node_pids() -> dict[int, int | None]:
    """Node id → the pid of its JVM (None while the node is down), of the running cluster."""
    return {node.node_id: node.pid for node in nodes()}


def kill_node(node_id: int) -> int:
    """SIGKILL the JVM of node ``node_id`` of the running cluster; return its pid once it
    exited. Its data stays for :func:`restart_node`."""
    return faults.kill_node(broker_dir(), node_id)


def restart_node(node_id: int, *, timeout: float = 120, in_sync: bool = True) -> NodeInfo:
    """Start node ``node_id`` of the running cluster again and return it once it answers
    and the metadata lists every broker; with ``in_sync`` (the default), also once every
    partition has all its replicas in sync again."""
    return faults.restart_node(broker_dir(), node_id, timeout=timeout, in_sync=in_sync)


def wait_in_sync(timeout: float = 120) -> None:
    """Wait until every partition of the running local broker has all its replicas in sync."""
    info = status(probe=False)
    if info is None:
        raise BrokerError(f"no broker runs from {broker_dir()}")
    faults.wait_in_sync(info, timeout=timeout)
