"""Start, check and stop a local single-node Apache Kafka (KRaft) broker run from cached jars."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.broker.jars import (
    KAFKA_VERSION,
    ensure_jars,
    java_command,
    kafka_version,
    locked,
    require_java,
)
from kit.errors import BrokerError, ConfigError, KitError

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerInfo",
    "broker_dir",
    "cli_main",
    "ensure_running",
    "running_address",
    "server_properties",
    "start",
    "status",
    "stop",
]

DEFAULT_PORT = 9092
"""Client port of the local broker unless ``KIT_BROKER_PORT`` or ``port=`` says otherwise."""

HOST = "127.0.0.1"
_POLL = 0.2
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # brokers this process launched, to reap them


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker: where clients connect, its process and its files."""

    bootstrap_servers: str
    pid: int
    port: int
    version: str
    data_dir: Path


def broker_dir() -> Path:
    """Return the broker's data and state folder: ``KIT_BROKER_DIR`` or ``~/.cache/kit/broker``."""
    value = os.environ.get("KIT_BROKER_DIR", "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "kit" / "broker"
    return path.resolve()


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """Return the ``server.properties`` text of a combined broker+controller single node."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft-logs"),
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "auto.create.topics.enable": "false",
        "log.cleaner.backoff.ms": "1000",
        "log.retention.check.interval.ms": "5000",
    }
    lines = ["# Written by kit (kit.broker.local); rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


# -- files in the data dir ---------------------------------------------------------------


def _pid_file(data_dir: Path) -> Path:
    return data_dir / "broker.pid"


def _state_file(data_dir: Path) -> Path:
    return data_dir / "state.json"


def _log_file(data_dir: Path) -> Path:
    return data_dir / "broker.log"


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int(_pid_file(data_dir).read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _forget(data_dir: Path, pid: int | None) -> None:
    """Remove the pid and state files, but only if they still describe ``pid``."""
    if _read_pid(data_dir) in (pid, None):
        _pid_file(data_dir).unlink(missing_ok=True)
        _state_file(data_dir).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no broker log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(broker log is empty)"


# -- processes and ports -----------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        pass
    try:  # no /proc (macOS)
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is alive and is a kafka.Kafka process of this data dir."""
    if not _pid_alive(pid):
        return False
    command = _command_line(pid)
    return "kafka.Kafka" in command and str(data_dir / "server.properties") in command


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 0, "reconnect.backoff.max.ms": 500}
    )


def _answers(bootstrap: str, timeout: float, admin: Any = None) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request and lists itself."""
    host, _, port_text = bootstrap.rpartition(":")
    port = int(port_text)
    try:
        socket.create_connection((host, port), timeout=min(timeout, 1.0)).close()
    except OSError:
        return False
    try:
        metadata = (admin or _admin(bootstrap)).list_topics(timeout=timeout)
    except Exception:
        return False
    return any(broker.port == port for broker in metadata.brokers.values())


def _requested_port(port: int | None) -> int:
    if port is None:
        value = os.environ.get("KIT_BROKER_PORT", "").strip()
        if not value:
            return DEFAULT_PORT
        if not value.isdigit():
            raise ConfigError("KIT_BROKER_PORT", f"must be a port number, got {value!r}")
        port = int(value)
    if not 0 < port < 65536:
        raise ConfigError("port", f"must be between 1 and 65535, got {port}")
    return port


def _cluster_id() -> str:
    while True:  # Kafka never hands out ids starting with "-" (they read like options)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format(java: str, libs: Path, data_dir: Path) -> None:
    logs = data_dir / "kraft-logs"
    if (logs / "meta.properties").is_file():
        return
    if logs.exists():
        shutil.rmtree(logs)  # a format that never finished
    config = str(data_dir / "server.properties")
    args = ("format", "--standalone", "-t", _cluster_id(), "-c", config)
    command = java_command(java, libs, "kafka.tools.StorageTool", *args)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError("formatting the broker storage took longer than 120s") from None
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise BrokerError(f"formatting the broker storage failed:\n{output}")


# -- public API --------------------------------------------------------------------------


def _info_from_state(data_dir: Path, pid: int, state: dict[str, Any]) -> BrokerInfo:
    return BrokerInfo(
        bootstrap_servers=str(state["bootstrap_servers"]),
        pid=pid,
        port=int(state["port"]),
        version=str(state["version"]),
        data_dir=data_dir,
    )


def status(*, probe: bool = True) -> BrokerInfo | None:
    """Return the local broker's info if it runs and answers, else None.

    Stale pid and state files left by a broker that died are removed. `probe=False`
    skips the metadata request: the process runs and its state file gives the address.
    """
    data_dir = broker_dir()
    pid = _read_pid(data_dir)
    if pid is None or not _is_our_broker(pid, data_dir):
        if pid is not None or _state_file(data_dir).exists():
            with contextlib.suppress(BrokerError):  # skip if someone is starting it right now
                with locked(data_dir / ".lock", 0, "starting the broker"):
                    _forget(data_dir, pid)
        return None
    state = _read_state(data_dir)
    if state is None:
        return None  # still starting
    if probe and not _answers(str(state.get("bootstrap_servers")), timeout=3.0):
        return None  # still starting, or hung
    return _info_from_state(data_dir, pid, state)


def running_address() -> str | None:
    """Return the running local broker's bootstrap address, or None.

    Cheap (a process check and a file read, no network): it is called for every client
    the kit makes without KIT_BOOTSTRAP_SERVERS; the client's own connection reports a
    broker that runs but does not answer.
    """
    info = status(probe=False)
    return info.bootstrap_servers if info else None


def start(port: int | None = None, *, timeout: float = 120) -> BrokerInfo:
    """Start the local broker, or return the one already running from the same data dir.

    ``port`` defaults to ``KIT_BROKER_PORT`` or 9092. ``timeout`` bounds the wait for the
    broker to answer requests; the one-time jar download has its own deadline (15 min).
    Raises BrokerError when Java is missing, the port is taken, or the broker fails.
    """
    data_dir = broker_dir()
    wanted = _requested_port(port)
    running = status()
    if running is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        with locked(data_dir / ".lock", timeout + 30, "starting the broker"):
            running = status()  # someone else may have started it while we waited
            if running is None:
                return _start_locked(data_dir, wanted, timeout)
    if port is not None and running.port != port:
        raise BrokerError(
            f"a broker from {data_dir} already runs at {running.bootstrap_servers}; "
            "stop it first or set KIT_BROKER_DIR"
        )
    return running


def _start_locked(data_dir: Path, port: int, timeout: float) -> BrokerInfo:
    old_pid = _read_pid(data_dir)
    if old_pid is not None and _is_our_broker(old_pid, data_dir):
        raise BrokerError(
            f"a broker from {data_dir} (pid {old_pid}) runs but does not answer; "
            "run `kit broker stop` and start again"
        )
    _forget(data_dir, old_pid)
    if not _port_free(port):
        raise BrokerError(
            f"port {port} is taken by another process; set KIT_BROKER_PORT or pass --port"
        )
    controller_port = port + 1 if port < 65535 and _port_free(port + 1) else _free_port()
    java = require_java()
    version = kafka_version()
    libs = ensure_jars(version)
    config = data_dir / "server.properties"
    config.write_text(server_properties(port, controller_port, data_dir))
    _format(java, libs, data_dir)

    bootstrap = f"{HOST}:{port}"
    command = java_command(java, libs, "kafka.Kafka", str(config))
    started = time.monotonic()
    with open(_log_file(data_dir), "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    _pid_file(data_dir).write_text(f"{proc.pid}\n")
    try:
        _wait_ready(proc, bootstrap, data_dir, started + timeout, timeout)
    except BaseException:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _forget(data_dir, proc.pid)
        _CHILDREN.pop(proc.pid, None)
        raise
    state = {
        "pid": proc.pid,
        "bootstrap_servers": bootstrap,
        "port": port,
        "controller_port": controller_port,
        "version": version,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "startup_seconds": round(time.monotonic() - started, 2),
    }
    _state_file(data_dir).write_text(json.dumps(state, indent=2) + "\n")
    return _info_from_state(data_dir, proc.pid, state)


def _wait_ready(
    proc: subprocess.Popen[bytes], bootstrap: str, data_dir: Path, deadline: float, timeout: float
) -> None:
    admin = None
    port = int(bootstrap.rpartition(":")[2])
    while True:
        if proc.poll() is not None:
            raise BrokerError(
                f"the broker exited with code {proc.returncode} while starting; "
                f"last lines of {_log_file(data_dir)}:\n{_tail(_log_file(data_dir))}"
            )
        if admin is None and _listening(port):
            admin = _admin(bootstrap)  # only once it listens, so no reconnect backoff piles up
        left = deadline - time.monotonic()
        if admin is not None and _answers(bootstrap, timeout=max(min(left, 2.0), 0.1), admin=admin):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the broker did not answer at {bootstrap} within {timeout:.0f}s; "
                f"last lines of {_log_file(data_dir)}:\n{_tail(_log_file(data_dir))}"
            )
        time.sleep(_POLL)


def stop(timeout: float = 30) -> bool:
    """Stop the local broker (SIGTERM, then SIGKILL after ``timeout`` s).

    Returns True if a broker was running. Its data stays for the next start.
    """
    data_dir = broker_dir()
    pid = _read_pid(data_dir)
    if pid is None or not _is_our_broker(pid, data_dir):
        _forget(data_dir, pid)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # controlled shutdown
    if not _wait_exit(pid, time.monotonic() + timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_exit(pid, time.monotonic() + 10):
            raise BrokerError(f"the broker (pid {pid}) did not exit even after SIGKILL")
    _forget(data_dir, pid)
    _CHILDREN.pop(pid, None)
    return True


def _wait_exit(pid: int, deadline: float) -> bool:
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def ensure_running() -> BrokerInfo:
    """Return the running local broker, starting it first if needed."""
    return status() or start()


def cli_main(argv: list[str]) -> int:
    """Run ``kit broker start|stop|status``; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="kit broker", description="Run a local single-node Apache Kafka broker."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="start the broker (or report the running one)")
    start_cmd.add_argument("--port", type=int, default=None, help="client port (default 9092)")
    start_cmd.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    commands.add_parser("stop", help="stop the broker")
    commands.add_parser("status", help="exit 0 if the broker runs and answers, else 1")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "start":
            info = start(args.port, timeout=args.timeout)
            print(
                f"kafka {info.version} ready at {info.bootstrap_servers} "
                f"(pid {info.pid}, data {info.data_dir})"
            )
            return 0
        if args.command == "stop":
            print("stopped" if stop() else "not running")
            return 0
        info_or_none = status()
        if info_or_none is None:
            print("not running")
            return 1
        print(
            f"running at {info_or_none.bootstrap_servers} "
            f"(pid {info_or_none.pid}, kafka {info_or_none.version})"
        )
        return 0
    except KitError as exc:
        print(f"kit broker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # start() already stopped what it launched
        print("kit broker: interrupted", file=sys.stderr)
        return 130
