"""Unit tests of the local three-node cluster that start no JVM: properties, layout, modes, CLI."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kit.broker import cluster, local, single
from kit.broker.info import BrokerInfo, NodeInfo
from kit.broker.layout import new_layout
from kit.cli import main as kit_main
from kit.config import load_settings
from kit.errors import BrokerError, ConfigError

PORTS = (19092, 19093, 19094)
CONTROLLERS = (19095, 19096, 19097)


def broker_cli(*args: str) -> int:
    """`kit broker ARGS...` through the kit CLI; wrong usage counts as exit 2."""
    try:
        return kit_main(["broker", *args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("KIT_BROKER_PORT", "KIT_BOOTSTRAP_SERVERS", "KIT_BROKER_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def _no_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no Kafka java command may be built")

    monkeypatch.setattr(single, "java_command", refuse)
    monkeypatch.setattr(cluster, "java_command", refuse)


def test_node_properties_of_each_node(tmp_path: Path) -> None:
    for node_id in (1, 2, 3):
        node_dir = tmp_path / f"node-{node_id}"
        props = _properties(cluster.node_properties(node_id, PORTS, CONTROLLERS, node_dir))
        port, controller = PORTS[node_id - 1], CONTROLLERS[node_id - 1]
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.bootstrap.servers"] == (
            "127.0.0.1:19095,127.0.0.1:19096,127.0.0.1:19097"
        )
        assert "controller.quorum.voters" not in props  # a dynamic quorum: fixed by format
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
        assert props["inter.broker.listener.name"] == "PLAINTEXT"
        assert props["log.dirs"] == str(node_dir / "kraft-logs")
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["share.coordinator.state.topic.replication.factor"] == "3"
        assert props["share.coordinator.state.topic.min.isr"] == "2"
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["group.initial.rebalance.delay.ms"] == "0"
        assert props["auto.create.topics.enable"] == "false"


def test_node_properties_sasl(tmp_path: Path) -> None:
    props = _properties(cluster.node_properties(2, PORTS, CONTROLLERS, tmp_path, "pw"))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19096"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert 'password="pw"' in props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]


def test_node_properties_rejects_a_node_outside_the_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        cluster.node_properties(4, PORTS, CONTROLLERS, tmp_path)


def test_single_node_properties_are_unchanged(tmp_path: Path) -> None:
    props = _properties(local.server_properties(19092, 19093, tmp_path))
    assert props["offsets.topic.replication.factor"] == "1"
    assert "min.insync.replicas" not in props and "default.replication.factor" not in props


def test_new_layout_ports_and_ids() -> None:
    port = _free_run(6)
    layout = new_layout(port, 3)
    nodes = layout["nodes"]
    assert [n["node_id"] for n in nodes] == [1, 2, 3]
    assert [n["port"] for n in nodes] == [port, port + 1, port + 2]
    assert [n["controller_port"] for n in nodes] == [port + 3, port + 4, port + 5]
    ids = {n["directory_id"] for n in nodes} | {layout["cluster_id"]}
    assert len(ids) == 4 and all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_new_layout_refuses_a_taken_client_port() -> None:
    port = _free_run(6)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port + 1))
        squatter.listen()
        with pytest.raises(BrokerError, match=f"port {port + 1} is taken by another process"):
            new_layout(port, 3)
    with pytest.raises(BrokerError, match="pick a lower port"):
        new_layout(65534, 3)


def test_format_gives_every_node_one_cluster_id_and_voter_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    class Done:
        returncode = 0

        def __init__(self, command: list[str], **kwargs: Any) -> None:
            commands.append(command)

        def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
            return b"", b""

    monkeypatch.setattr(cluster.subprocess, "Popen", Done)
    layout = new_layout(_free_run(6), 3)
    cluster._format("java", Path("/libs"), tmp_path, layout, "pw")
    assert len(commands) == 3
    voters = ",".join(
        f"{n['node_id']}@127.0.0.1:{n['controller_port']}:{n['directory_id']}"
        for n in layout["nodes"]
    )
    for node_id, command in enumerate(commands, start=1):
        assert "-Xmx512m" in command
        args = command[command.index("kafka.tools.StorageTool") + 1 :]
        assert args[:3] == ["format", "-t", layout["cluster_id"]]
        assert args[args.index("-c") + 1] == str(tmp_path / f"node-{node_id}" / "server.properties")
        assert args[args.index("--initial-controllers") + 1] == voters
        assert args[args.index("--add-scram") + 1] == "SCRAM-SHA-512=[name=admin,password=pw]"
        assert "--standalone" not in args


def _write_cluster(data_dir: Path, formatted: bool = True) -> dict[str, Any]:
    layout = new_layout(_free_run(6), 3)
    layout["formatted"] = formatted
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cluster.json").write_text(json.dumps(layout))
    if formatted:
        for node in layout["nodes"]:
            logs = data_dir / f"node-{node['node_id']}" / "kraft-logs"
            logs.mkdir(parents=True)
            (logs / "meta.properties").write_text("node.id=1\n")
    return layout


def test_the_mode_follows_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_jvm(monkeypatch)
    data_dir = local.broker_dir()
    _write_cluster(data_dir)
    assert cluster.formatted_size(data_dir) == 3
    assert local._size(data_dir, None) == 3
    assert local._size(data_dir, 3) == 3
    with pytest.raises(BrokerError, match="formatted as a 3-broker cluster; start it with --brok"):
        local.start(brokers=1)
    assert broker_cli("start", "--brokers", "1") == 2


def test_an_unfinished_cluster_format_is_no_commitment() -> None:
    data_dir = local.broker_dir()
    _write_cluster(data_dir, formatted=False)  # the format never finished
    assert cluster.is_cluster(data_dir) and cluster.formatted_size(data_dir) is None
    assert local._size(data_dir, None) == 3  # a plain start retries the cluster
    assert local._size(data_dir, 1) == 1  # or a single broker may take the dir


def test_a_single_broker_dir_refuses_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_jvm(monkeypatch)
    data_dir = local.broker_dir()
    (data_dir / "kraft-logs").mkdir(parents=True)
    (data_dir / "kraft-logs" / "meta.properties").write_text("node.id=1\n")
    assert local._size(data_dir, None) == 1
    with pytest.raises(BrokerError, match="formatted as a single broker"):
        local.start(brokers=3)
    with pytest.raises(ConfigError, match="brokers"):
        local.start(brokers=2)


def test_a_formatted_cluster_keeps_its_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_jvm(monkeypatch)
    layout = _write_cluster(local.broker_dir())
    first = layout["nodes"][0]["port"]
    with pytest.raises(BrokerError, match=f"formatted with client ports from {first}"):
        local.start(first + 10)


def test_status_stop_and_fault_calls_when_no_cluster_runs(tmp_path: Path) -> None:
    data_dir = local.broker_dir()
    layout = _write_cluster(data_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / "node-2" / "broker.pid").write_text(f"{dead.pid}\n")
    (data_dir / "state.json").write_text(json.dumps({"version": "4.4.0"}))
    assert local.status() is None  # no node alive: stale files go
    assert not (data_dir / "node-2" / "broker.pid").exists()
    assert not (data_dir / "state.json").exists()
    assert local.running_address() is None
    assert local.stop() is False
    for call in (local.nodes, local.node_pids, lambda: local.kill_node(1)):
        with pytest.raises(BrokerError, match="no cluster runs from"):
            call()
    assert cluster.formatted_size(data_dir) == len(layout["nodes"])


def _cluster_info(tmp_path: Path, down: int | None = None) -> BrokerInfo:
    nodes = tuple(
        NodeInfo(i, PORTS[i - 1], CONTROLLERS[i - 1], None if i == down else 100 + i, tmp_path)
        for i in (1, 2, 3)
    )
    bootstrap = ",".join(node.address for node in nodes)
    return BrokerInfo(bootstrap, 101, PORTS[0], "4.4.0", tmp_path, nodes=nodes)


def test_cluster_info_env_sets_the_replication(tmp_path: Path) -> None:
    info = _cluster_info(tmp_path)
    assert (info.brokers, info.replication) == (3, 3)
    env = info.client_env()
    assert env == {
        "KIT_BOOTSTRAP_SERVERS": "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
        "KIT_TOPIC_REPLICATION": "3",
    }
    assert load_settings(env).topic_replication == 3
    single = BrokerInfo("127.0.0.1:1", 1, 1, "4.4.0", tmp_path)
    assert (single.brokers, single.replication) == (1, 1)
    assert "KIT_TOPIC_REPLICATION" not in single.client_env()


def test_cli_status_lists_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local, "status", lambda: _cluster_info(tmp_path, down=2))
    assert broker_cli("status") == 0
    assert capsys.readouterr().out.splitlines() == [
        "running at 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 "
        "(3 brokers, 2 alive, kafka 4.4.0)",
        "  node 1: pid 101, port 19092, controller port 19095, alive",
        "  node 2: port 19093, controller port 19096, down",
        "  node 3: pid 103, port 19094, controller port 19097, alive",
        "Use it from kit with:",
        "  export KIT_BOOTSTRAP_SERVERS=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
        "  export KIT_TOPIC_REPLICATION=3",
    ]


def test_cli_kill_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = NodeInfo(2, PORTS[1], CONTROLLERS[1], 4242, tmp_path)
    monkeypatch.setattr(local, "kill_node", lambda node_id: 4141)
    monkeypatch.setattr(local, "restart_node", lambda node_id, timeout: node)
    assert broker_cli("kill", "2") == 0
    assert broker_cli("restart", "2") == 0
    assert capsys.readouterr().out.splitlines() == [
        "killed node 2 (pid 4141)",
        "node 2 is back at 127.0.0.1:19093 (pid 4242)",
    ]
    assert broker_cli("start", "--brokers", "2") == 2


def test_public_names_stay_importable_from_local() -> None:
    for name in (
        "ADMIN_USER",
        "DEFAULT_PORT",
        "KAFKA_VERSION",
        "SASL_MECHANISM",
        "BrokerInfo",
        "add_acls",
        "add_scram_user",
        "broker_dir",
        "ensure_running",
        "running_address",
        "server_properties",
        "start",
        "status",
        "stop",
        "_admin_password",
        "java_command",
    ):
        assert hasattr(local, name), name


def _free_run(length: int) -> int:
    """A port p with p .. p+length-1 all free."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + length < 65536 and all(_free(p) for p in range(port, port + length)):
            return port
    raise AssertionError(f"no {length} free adjacent ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
