"""Unit tests of the local broker launcher that need no broker, no Java run and no network."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from kit.broker import jars, local, single
from kit.cli import main as kit_main
from kit.errors import BrokerError, ConfigError
from kit.testing import broker as testing_broker


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
    for name in (
        "KIT_BROKER_PORT",
        "KIT_KAFKA_VERSION",
        "KIT_BOOTSTRAP_SERVERS",
        "KIT_KEEP_BROKER",
    ):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no Kafka java command (format or broker) may be built")

    monkeypatch.setattr(single, "java_command", refuse)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def test_server_properties_single_node(tmp_path: Path) -> None:
    props = _properties(local.server_properties(19092, 19093, tmp_path))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "controller.quorum.voters" not in props  # --standalone forbids it
    assert props["controller.listener.names"] == "CONTROLLER"
    assert "CONTROLLER:PLAINTEXT" in props["listener.security.protocol.map"]
    assert Path(props["log.dirs"]).parent == tmp_path
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.num.partitions"] == "4"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.cleaner.backoff.ms"] == "1000"


def test_java_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_launch(monkeypatch)
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)
    with pytest.raises(BrokerError, match=r"^java not found on PATH: .*Java 17\+$"):
        local.start(_free_port())


def test_java_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_launch(monkeypatch)
    _script(tmp_path / "bin", "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(BrokerError, match=r"Java 11: .*needs Java 17\+"):
        local.start(_free_port())


def test_java_version_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    _script(tmp_path / "bin", "java", "echo 'java version \"1.8.0_392\"' >&2")
    with pytest.raises(BrokerError, match="Java 8"):
        jars.require_java()
    _script(tmp_path / "bin", "java", "echo 'openjdk version \"21\" 2023-09-19' >&2")
    assert jars.require_java() == str(tmp_path / "bin" / "java")


def test_mvn_missing_when_jars_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_launch(monkeypatch)
    _script(tmp_path / "bin", "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(BrokerError, match=r"^mvn not found on PATH"):
        local.start(_free_port())


def test_port_taken_is_refused_before_java(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_launch(monkeypatch)
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)  # java would fail later
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} is taken by another process"):
            local.start(port)
        monkeypatch.setenv("KIT_BROKER_PORT", str(port))
        with pytest.raises(BrokerError, match=f"port {port} is taken"):
            local.start()


def test_bad_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_BROKER_PORT", "nine")
    with pytest.raises(ConfigError, match="KIT_BROKER_PORT"):
        local.start()
    with pytest.raises(ConfigError):
        local.start(70000)


def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    assert local.status() is None
    assert local.running_address() is None
    assert local.stop() is False


def test_stale_pid_files_are_cleaned() -> None:
    data_dir = local.broker_dir()
    data_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / "broker.pid").write_text(f"{dead.pid}\n")
    (data_dir / "state.json").write_text("{}")
    assert local.status() is None
    assert not (data_dir / "broker.pid").exists()
    assert not (data_dir / "state.json").exists()


def test_unrelated_live_pid_is_not_ours() -> None:
    data_dir = local.broker_dir()
    data_dir.mkdir(parents=True)
    (data_dir / "broker.pid").write_text(f"{os.getpid()}\n")
    assert local.stop() is False  # and it did not signal us
    assert not (data_dir / "broker.pid").exists()


def test_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker_cli("status") == 1
    assert capsys.readouterr().out == "not running\n"
    assert broker_cli("stop") == 0
    assert capsys.readouterr().out == "not running\n"
    _no_launch(monkeypatch)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert broker_cli("start", "--port", str(port)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"kit broker: port {port} is taken by another process; set KIT_BROKER_PORT or pass --port\n"
    )
    assert broker_cli("frobnicate") == 2


def _fake_mvn(tmp_path: Path, version: str) -> Path:
    calls = tmp_path / "mvn-calls"
    body = f"""
echo call >> {calls}
sleep 0.3
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
done
mkdir -p "$out" && touch "$out/kafka_2.13-{version}.jar"
"""
    _script(tmp_path / "bin", "mvn", body)
    return calls


def test_ensure_jars_runs_maven_once_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_mvn(tmp_path, "9.9.9")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    results: list[Path] = []
    workers = [
        threading.Thread(target=lambda: results.append(jars.ensure_jars("9.9.9"))) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert calls.read_text().count("call") == 1
    expected = tmp_path / "cache" / "kafka-9.9.9" / "libs"
    assert results == [expected] * 4
    assert (expected.parent / ".complete").is_file()
    assert (expected.parent / "pom.xml").read_text() == jars.POM_PATH.read_text()


def test_ensure_jars_failure_leaves_no_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / "bin", "mvn", "echo 'Could not resolve dependencies' ; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BrokerError, match="Could not resolve dependencies"):
        jars.ensure_jars("0.0.1")
    assert not (tmp_path / "cache" / "kafka-0.0.1" / ".complete").exists()


def test_version_and_cache_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jars.kafka_version() == jars.KAFKA_VERSION == "4.4.0"
    monkeypatch.setenv("KIT_KAFKA_VERSION", "4.1.1")
    assert jars.jars_dir() == tmp_path / "cache" / "kafka-4.1.1" / "libs"
    command = jars.java_command("java", Path("/x/libs"), "kafka.Kafka", "server.properties")
    assert command[-4:] == ["-cp", "/x/libs/*", "kafka.Kafka", "server.properties"]
    assert f"-Dlog4j2.configurationFile={jars.LOG4J_CONFIG}" in command
    assert jars.LOG4J_CONFIG.is_file() and jars.POM_PATH.is_file()


def test_resolve_broker_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_BOOTSTRAP_SERVERS", "kafka-1:9092")
    resolved = testing_broker.resolve_broker()
    assert (resolved.bootstrap_servers, resolved.source) == ("kafka-1:9092", "env")
    resolved.close()


def test_resolve_broker_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = local.BrokerInfo("127.0.0.1:1", 1, 1, "4.4.0", tmp_path)
    stopped: list[bool] = []
    monkeypatch.setattr(testing_broker, "docker_available", lambda: False)
    monkeypatch.setattr(local, "stop", lambda: stopped.append(True) or True)

    monkeypatch.setattr(local, "status", lambda: info)  # already running: never stopped
    resolved = testing_broker.resolve_broker()
    assert (resolved.bootstrap_servers, resolved.source) == ("127.0.0.1:1", "local")
    resolved.close()
    assert stopped == []

    monkeypatch.setattr(local, "status", lambda: None)  # we start it: close stops it
    monkeypatch.setattr(local, "start", lambda: info)
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path / "kept"))
    testing_broker.resolve_broker().close()
    assert stopped == [True]
    monkeypatch.setenv("KIT_KEEP_BROKER", "1")
    testing_broker.resolve_broker().close()
    assert stopped == [True]


def test_resolve_broker_starts_on_a_throwaway_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither KIT_BROKER_DIR nor KIT_KEEP_BROKER, the tests' broker gets a fresh data
    dir (for this process and its children), deleted on close: a kept one would collect
    every test topic until the broker runs out of file descriptors."""
    monkeypatch.delenv("KIT_BROKER_DIR", raising=False)
    monkeypatch.delenv("KIT_KEEP_BROKER", raising=False)
    monkeypatch.setattr(testing_broker, "docker_available", lambda: False)
    monkeypatch.setattr(local, "status", lambda: None)
    seen: list[Path] = []
    stopped: list[Path] = []

    def start() -> local.BrokerInfo:
        data_dir = local.broker_dir()
        (data_dir / "kraft-logs").mkdir()
        seen.append(data_dir)
        return local.BrokerInfo("127.0.0.1:1", 1, 1, "4.4.0", data_dir)

    monkeypatch.setattr(local, "start", start)
    monkeypatch.setattr(local, "stop", lambda: stopped.append(local.broker_dir()) or True)
    for _ in range(2):
        resolved = testing_broker.resolve_broker()
        assert os.environ["KIT_BROKER_DIR"] == str(seen[-1])
        resolved.close()
        assert stopped[-1] == seen[-1] and not seen[-1].exists()
        assert "KIT_BROKER_DIR" not in os.environ
    assert seen[0] != seen[1] and seen[0] != Path.home() / ".cache" / "kit" / "broker"

    def refused() -> local.BrokerInfo:
        raise RuntimeError("no java")

    monkeypatch.setattr(local, "start", refused)
    with pytest.raises(RuntimeError):
        testing_broker.resolve_broker()
    assert "KIT_BROKER_DIR" not in os.environ


def test_ports_for_servers_are_free_and_below_the_ephemeral_range() -> None:
    """A connection opened while a JVM starts takes an ephemeral port: never ours."""
    from kit.broker.process import free_port, port_free

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for length in (1, 6):
        port = free_port(length)
        assert 10000 <= port and port + length <= low
        assert all(port_free(p) for p in range(port, port + length))
