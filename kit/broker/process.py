"""Processes and ports of local Kafka nodes: launch, liveness, readiness probes, stop, format."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kit.broker.files import log_file, pid_file
from kit.errors import BrokerError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = [
    "HOST",
    "POLL",
    "admin",
    "answers",
    "free_port",
    "is_our_broker",
    "is_our_process",
    "kafka_uuid",
    "launch",
    "listening",
    "pid_alive",
    "port_free",
    "reap",
    "run_format",
    "terminate",
    "wait_exit",
]

HOST = "127.0.0.1"
"""Every local node listens on loopback only."""

POLL = 0.2
"""Seconds between two checks of a process or port."""

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # nodes this process launched, to reap them


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not count; our own exited children are reaped)."""
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


def is_our_process(pid: int, *parts: str) -> bool:
    """True when ``pid`` is alive and its command line holds every one of ``parts``."""
    if not pid_alive(pid):
        return False
    command = _command_line(pid)
    return all(part in command for part in parts)


def is_our_broker(pid: int, node_dir: Path) -> bool:
    """True when ``pid`` is alive and is a kafka.Kafka process of the node in ``node_dir``."""
    return is_our_process(pid, "kafka.Kafka", str(node_dir / "server.properties"))


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on loopback (as the JVM binds it, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    """True when something accepts connections on ``port``."""
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def free_port(length: int = 1) -> int:
    """A port p with p .. p+length-1 free now, for servers started next.

    Chosen below the kernel's ephemeral range where it is known (Linux), not by binding
    port 0: the kernel hands ephemeral ports to outgoing connections, so one opened by any
    process while a JVM starts could take the port first ("Address already in use").
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, low - length) if low > 11000 else _kernel_port()
        if port + length <= 65536 and all(port_free(p) for p in range(port, port + length)):
            return port
    raise BrokerError(f"no {length} free adjacent port(s) on {HOST}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range, 0 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def admin(bootstrap: str, config: Mapping[str, str] | None = None) -> AdminClient:
    """A quiet AdminClient that retries connections quickly (for probes, not for services)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "reconnect.backoff.max.ms": 500,
            **(config or {}),
        }
    )


def answers(
    bootstrap: str,
    timeout: float,
    admin_client: AdminClient | None = None,
    config: Mapping[str, str] | None = None,
    brokers: int = 1,
) -> bool:
    """True when the Kafka node at ``bootstrap`` (one address) answers a metadata request that
    lists itself and at least ``brokers`` brokers."""
    host, _, port_text = bootstrap.rpartition(":")
    port = int(port_text)
    try:
        socket.create_connection((host, port), timeout=min(timeout, 1.0)).close()
    except OSError:
        return False
    try:
        if admin_client is None:  # not `admin or ...`: an AdminClient with no events is falsy
            admin_client = admin(bootstrap, config)
        metadata = admin_client.list_topics(timeout=timeout)
    except Exception:
        return False
    found = metadata.brokers.values()
    return len(found) >= brokers and any(broker.port == port for broker in found)


def kafka_uuid() -> str:
    """A random id in Kafka's form (base64url, 22 characters), for cluster and directory ids."""
    while True:  # Kafka never hands out ids starting with "-" (they read like options)
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def run_format(command: Sequence[str], what: str = "the broker storage") -> None:
    """Run one ``kafka.tools.StorageTool format`` command; raise BrokerError with its output."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError(f"formatting {what} took longer than 120s") from None
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise BrokerError(f"formatting {what} failed:\n{output}")


def launch(
    command: Sequence[str], node_dir: Path, *, append: bool = False, name: str = "broker"
) -> subprocess.Popen[bytes]:
    """Start a node's JVM in its own session, output to its log, and write its pid file
    (``<name>.log`` and ``<name>.pid`` in ``node_dir``)."""
    with open(log_file(node_dir, name), "ab" if append else "wb") as log:
        proc = subprocess.Popen(
            list(command),
            cwd=node_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    pid_file(node_dir, name).write_text(f"{proc.pid}\n")
    return proc


def reap(pid: int) -> None:
    """Forget a node process this process launched (after it exited)."""
    _CHILDREN.pop(pid, None)


def wait_exit(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits or ``deadline`` (monotonic) passes; True if it exited."""
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def terminate(pids: Sequence[int], timeout: float, what: str = "the broker") -> None:
    """SIGTERM each pid (Kafka's controlled shutdown), then SIGKILL those alive after ``timeout``
    seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        if not wait_exit(pid, deadline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not wait_exit(pid, time.monotonic() + 10):
                raise BrokerError(f"{what} (pid {pid}) did not exit even after SIGKILL")
        reap(pid)
