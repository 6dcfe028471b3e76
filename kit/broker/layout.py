"""``cluster.json``: the layout a local cluster was formatted with, and each node's folder.

The layout is fixed at format time: the cluster id, and each node's client port, controller
port and metadata directory id; ``"formatted": true`` once every node's storage is
formatted (a cluster is formatted once, never again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kit.broker.process import free_port, kafka_uuid, port_free
from kit.errors import BrokerError

__all__ = [
    "formatted_size",
    "is_cluster",
    "is_formatted",
    "layout_file",
    "layout_ports",
    "new_layout",
    "node_folder",
    "read_layout",
]


# Any: every Any here is a JSON value of cluster.json.


def layout_file(data_dir: Path) -> Path:
    """Where the layout of a cluster in ``data_dir`` is kept."""
    return data_dir / "cluster.json"


def node_folder(data_dir: Path, node_id: int) -> Path:
    """The folder of node ``node_id``: its properties, pid, log and KRaft storage."""
    return data_dir / f"node-{node_id}"


def read_layout(data_dir: Path) -> dict[str, Any] | None:
    """The layout of the cluster in ``data_dir``, or None if it holds no (readable) one."""
    try:
        layout = json.loads(layout_file(data_dir).read_text())
        return layout if isinstance(layout, dict) and layout.get("nodes") else None
    except (OSError, ValueError):
        return None


def is_formatted(layout: dict[str, Any] | None) -> bool:
    """True once every node's storage was formatted: never format such a cluster again."""
    return layout is not None and layout.get("formatted") is True


def formatted_size(data_dir: Path) -> int | None:
    """How many nodes the cluster formatted in ``data_dir`` has, or None if it holds none."""
    layout = read_layout(data_dir)
    return len(layout["nodes"]) if layout is not None and is_formatted(layout) else None


def is_cluster(data_dir: Path) -> bool:
    """True when ``data_dir`` holds a cluster (formatted, or being formatted)."""
    return layout_file(data_dir).is_file()


def new_layout(port: int, size: int) -> dict[str, Any]:
    """A fresh layout: client ports from ``port`` on, free controller ports, new ids.

    Raises BrokerError if a client port is out of range or taken.
    """
    ports = list(range(port, port + size))
    if ports[-1] > 65535:
        raise BrokerError(
            f"a {size}-node cluster needs ports {port}-{ports[-1]}; pick a lower port"
        )
    for taken in [p for p in ports if not port_free(p)]:
        raise BrokerError(
            f"port {taken} is taken by another process (a {size}-node cluster uses ports "
            f"{ports[0]}-{ports[-1]}); set KIT_BROKER_PORT or pass --port"
        )
    controllers = list(range(port + size, port + 2 * size))
    if not all(p < 65536 and port_free(p) for p in controllers):
        controllers = []
        while len(controllers) < size:
            candidate = free_port()
            if candidate not in ports and candidate not in controllers:
                controllers.append(candidate)
    nodes = [
        {"node_id": i + 1, "port": p, "controller_port": c, "directory_id": kafka_uuid()}
        for i, (p, c) in enumerate(zip(ports, controllers, strict=True))
    ]
    return {"cluster_id": kafka_uuid(), "nodes": nodes}


def layout_ports(layout: dict[str, Any], kind: str) -> list[int]:
    """Each node's client ports (``kind="port"``) or controller ports, in node order."""
    return [int(node[kind]) for node in layout["nodes"]]
