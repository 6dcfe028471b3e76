"""A local three-node Kafka (KRaft) cluster on loopback: format, start, status and stop it.

Each node is a combined broker and controller with its own folder under the data dir
(``node-1/`` ... ``node-3/``: ``server.properties``, ``broker.pid``, ``broker.log``,
``kraft-logs/``). Combined nodes, not three brokers plus three controllers: three JVMs
instead of six on a laptop, and killing a node then takes a broker and a voter at once,
which is the harder fault. The three controllers form one dynamic KRaft quorum: every
node's storage is formatted with the same cluster id and the same ``--initial-controllers``
voter set, so the quorum survives one node's loss and no controller is added later. Topics
get 3 replicas and ``min.insync.replicas=2`` (:func:`kit.broker.properties.node_properties`).

``cluster.json`` in the data dir records the layout fixed at format time
(:mod:`kit.broker.layout`). The voters' controller endpoints live in the metadata log, so a
cluster always restarts on the ports it was formatted with. ``state.json`` is written once
all nodes answer, as for a single broker. :mod:`kit.broker.faults` kills and restarts single nodes.

Each JVM runs with at most 512 MB of heap (:data:`NODE_HEAP`; a single broker gets 1 GB):
about 380 MB resident per node when idle, 430 MB under load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.broker.files import (
    log_file,
    pid_file,
    read_pid,
    read_state,
    state_file,
    tail,
    write_private,
)
from kit.broker.info import BrokerInfo, NodeInfo
from kit.broker.jars import ensure_jars, java_command, kafka_version, locked, require_java
from kit.broker.layout import (
    formatted_size,
    is_cluster,
    is_formatted,
    layout_file,
    layout_ports,
    new_layout,
    node_folder,
    read_layout,
)
from kit.broker.process import (
    HOST,
    POLL,
    admin,
    answers,
    is_our_broker,
    launch,
    listening,
    port_free,
    reap,
    terminate,
)
from kit.broker.properties import node_properties
from kit.broker.sasl import _admin_password, scram_format_args
from kit.errors import BrokerError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = [
    "CLUSTER_SIZE",
    "NODE_HEAP",
    "formatted_size",
    "is_cluster",
    "node_command",
    "start",
    "status",
    "stop",
    "wait_ready",
]

# Any: every Any here is a JSON value of the cluster's layout or state file.

CLUSTER_SIZE = 3
"""How many nodes ``kit broker start --brokers 3`` runs (the only cluster size offered)."""

NODE_HEAP = "512m"
"""Maximum heap of each node's JVM."""


def _nodes(data_dir: Path, layout: dict[str, Any]) -> tuple[NodeInfo, ...]:
    found = []
    for node in layout["nodes"]:
        node_dir = node_folder(data_dir, node["node_id"])
        pid = read_pid(node_dir)
        alive = pid is not None and is_our_broker(pid, node_dir)
        found.append(
            NodeInfo(
                int(node["node_id"]),
                int(node["port"]),
                int(node["controller_port"]),
                pid if alive else None,
                node_dir,
            )
        )
    return tuple(found)


def _info(data_dir: Path, layout: dict[str, Any], state: dict[str, Any]) -> BrokerInfo:
    nodes = _nodes(data_dir, layout)
    password = state.get("admin_password")
    return BrokerInfo(
        bootstrap_servers=",".join(node.address for node in nodes),
        pid=next((node.pid for node in nodes if node.pid is not None), 0),
        port=nodes[0].port,
        version=str(state["version"]),
        data_dir=data_dir,
        sasl=bool(state.get("sasl", False)),
        admin_password=str(password) if password is not None else None,
        nodes=nodes,
    )


def _forget_all(data_dir: Path, layout: dict[str, Any]) -> None:
    """Remove every node's pid file and the cluster's state file (no node runs)."""
    for node in layout["nodes"]:
        pid_file(node_folder(data_dir, node["node_id"])).unlink(missing_ok=True)
    state_file(data_dir).unlink(missing_ok=True)


def status(data_dir: Path, *, probe: bool = True) -> BrokerInfo | None:
    """The cluster in ``data_dir`` if at least one node runs (and, with ``probe``, answers).

    A node that is down shows with ``pid=None`` in :attr:`BrokerInfo.nodes`. Stale files of
    a cluster whose nodes all died are removed.
    """
    layout = read_layout(data_dir)
    if layout is None:
        return None
    state = read_state(data_dir)
    if state is None:
        return None  # never started, or still starting
    info = _info(data_dir, layout, state)
    live = [node for node in info.nodes if node.alive]
    if not live:
        with contextlib.suppress(BrokerError):  # skip if someone is starting it right now
            with locked(data_dir / ".lock", 0, "starting the broker"):
                _forget_all(data_dir, layout)
        return None
    if probe and not any(
        answers(node.address, timeout=3.0, config=info.client_config()) for node in live
    ):
        return None  # still starting, or hung
    return info


def start(
    data_dir: Path, port: int, *, timeout: float, sasl: bool | None, port_given: bool
) -> BrokerInfo:
    """Start the cluster in ``data_dir`` (formatting it first if new), with the lock held.

    ``port`` is node 1's client port for a new cluster; a formatted one keeps its ports, and
    ``port_given`` says a different explicit port is an error. Returns once every node
    answers and the metadata lists all brokers.
    """
    layout = read_layout(data_dir)
    formatted = is_formatted(layout)
    if layout is not None:
        _forget_stopped(data_dir, layout)
    if layout is not None and formatted:
        _check_ports(data_dir, layout, port, port_given)
    else:
        layout = new_layout(port, CLUSTER_SIZE)
    password = _admin_password(data_dir, sasl, formatted=formatted)
    java = require_java()
    version = kafka_version()
    libs = ensure_jars(version)
    _write_node_properties(data_dir, layout, password)
    if not formatted:
        write_private(layout_file(data_dir), json.dumps(layout, indent=2) + "\n")
        _format(java, libs, data_dir, layout, password)
        layout["formatted"] = True
        write_private(layout_file(data_dir), json.dumps(layout, indent=2) + "\n")

    started = time.monotonic()
    procs = [
        launch(node_command(java, libs, data_dir, n), node_folder(data_dir, n))
        for n in (int(node["node_id"]) for node in layout["nodes"])
    ]
    state: dict[str, Any] = {"version": version, "sasl": password is not None}
    if password is not None:
        state["admin_password"] = password
    info = _info(data_dir, layout, state)
    _wait_ready_or_kill(procs, data_dir, layout, info, started + timeout, timeout)
    state.update(
        bootstrap_servers=info.bootstrap_servers,
        ports=layout_ports(layout, "port"),
        controller_ports=layout_ports(layout, "controller_port"),
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        startup_seconds=round(time.monotonic() - started, 2),
    )
    write_private(state_file(data_dir), json.dumps(state, indent=2) + "\n")
    return _info(data_dir, layout, state)


def _forget_stopped(data_dir: Path, layout: dict[str, Any]) -> None:
    """Remove the files of a cluster none of whose nodes runs; raise if one still does."""
    for node in _nodes(data_dir, layout):
        if node.alive:
            raise BrokerError(
                f"node {node.node_id} of the cluster in {data_dir} (pid {node.pid}) runs "
                "but the cluster does not answer; run `kit broker stop` and start again"
            )
    _forget_all(data_dir, layout)


def _check_ports(data_dir: Path, layout: dict[str, Any], port: int, port_given: bool) -> None:
    """Raise BrokerError unless a formatted cluster can start on the ports it was made with."""
    first = int(layout["nodes"][0]["port"])
    if port_given and port != first:
        raise BrokerError(
            f"the cluster in {data_dir} was formatted with client ports from {first}; "
            "omit --port, or set KIT_BROKER_DIR to another folder"
        )
    for node in layout["nodes"]:
        for kind in ("port", "controller_port"):
            if not port_free(int(node[kind])):
                raise BrokerError(
                    f"port {node[kind]} of node {node['node_id']} is taken by another "
                    f"process; the cluster in {data_dir} always uses the ports it was "
                    "formatted with"
                )


def _write_node_properties(data_dir: Path, layout: dict[str, Any], password: str | None) -> None:
    """Write each node's ``server.properties`` into its folder (made if missing)."""
    ports, controllers = layout_ports(layout, "port"), layout_ports(layout, "controller_port")
    for node in layout["nodes"]:
        node_dir = node_folder(data_dir, node["node_id"])
        node_dir.mkdir(parents=True, exist_ok=True)
        text = node_properties(node["node_id"], ports, controllers, node_dir, password)
        write_private(node_dir / "server.properties", text)


def _wait_ready_or_kill(
    procs: list[subprocess.Popen[bytes]],
    data_dir: Path,
    layout: dict[str, Any],
    info: BrokerInfo,
    deadline: float,
    timeout: float,
) -> None:
    """`wait_ready` for every node; if that fails, kill them all and forget their files."""
    try:
        wait_ready(procs, info, info.nodes, deadline, timeout)
    except BaseException:
        for proc in procs:
            proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            reap(proc.pid)
        _forget_all(data_dir, layout)
        raise


def node_command(java: str, libs: Path, data_dir: Path, node_id: int) -> list[str]:
    """The command line of node ``node_id``'s broker JVM."""
    config = str(node_folder(data_dir, node_id) / "server.properties")
    return java_command(java, libs, "kafka.Kafka", config, heap=NODE_HEAP)


def _format(
    java: str, libs: Path, data_dir: Path, layout: dict[str, Any], password: str | None
) -> None:
    """Format every node's storage with one cluster id and one initial voter set, in parallel."""
    voters = ",".join(
        f"{n['node_id']}@{HOST}:{n['controller_port']}:{n['directory_id']}" for n in layout["nodes"]
    )
    running = []
    for node in layout["nodes"]:
        node_dir = node_folder(data_dir, node["node_id"])
        logs = node_dir / "kraft-logs"
        if logs.exists():
            shutil.rmtree(logs)  # a format that never finished
        config = str(node_dir / "server.properties")
        cluster_id = str(layout["cluster_id"])
        args = ["format", "-t", cluster_id, "-c", config, "--initial-controllers", voters]
        args += scram_format_args(password)
        command = java_command(java, libs, "kafka.tools.StorageTool", *args, heap=NODE_HEAP)
        running.append(
            (node, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
    failures = []
    for node, proc in running:
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"node {node['node_id']}: took longer than 120s")
            continue
        if proc.returncode != 0:
            text = "\n".join(output.decode(errors="replace").strip().splitlines()[-20:])
            failures.append(f"node {node['node_id']}:\n{text}")
    if failures:
        raise BrokerError("formatting the cluster storage failed:\n" + "\n".join(failures))


def wait_ready(
    procs: list[subprocess.Popen[bytes]],
    info: BrokerInfo,
    nodes: tuple[NodeInfo, ...],
    deadline: float,
    timeout: float,
) -> None:
    """Wait until each of ``nodes`` (run by ``procs``) answers and sees every broker."""
    admins: dict[int, AdminClient] = {}
    waiting = {node.node_id: node for node in nodes}
    while waiting:
        for proc, node in zip(procs, nodes, strict=True):
            if proc.poll() is not None:
                raise BrokerError(
                    f"node {node.node_id} exited with code {proc.returncode} while starting; "
                    f"last lines of {log_file(node.data_dir)}:\n{tail(log_file(node.data_dir))}"
                )
        for node_id, node in list(waiting.items()):
            if node_id not in admins and listening(node.port):
                admins[node_id] = admin(node.address, info.client_config())
            left = max(min(deadline - time.monotonic(), 2.0), 0.1)
            if node_id in admins and answers(
                node.address, left, admins[node_id], brokers=info.brokers
            ):
                del waiting[node_id]
        if waiting and time.monotonic() >= deadline:
            late = ", ".join(str(n) for n in sorted(waiting))
            logs = "\n".join(
                f"last lines of {log_file(node.data_dir)}:\n{tail(log_file(node.data_dir))}"
                for node in waiting.values()
            )
            raise BrokerError(
                f"node(s) {late} of the cluster did not answer with all {info.brokers} brokers "
                f"within {timeout:.0f}s; {logs}"
            )
        if waiting:
            time.sleep(POLL)


def stop(data_dir: Path, timeout: float = 30) -> bool:
    """Stop every node of the cluster (SIGTERM to all at once, SIGKILL after ``timeout`` s).

    Returns True if any node was running. The data stays for the next start.
    """
    layout = read_layout(data_dir)
    if layout is None:
        return False
    pids = [node.pid for node in _nodes(data_dir, layout) if node.pid is not None]
    if pids:
        terminate(pids, timeout, "a cluster node")
    _forget_all(data_dir, layout)
    return bool(pids)
