"""The single-node broker: format its storage, launch its JVM, wait for it, save its state.

:mod:`kit.broker.local` decides between this and :mod:`kit.broker.cluster`, and holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from kit.broker.files import forget, log_file, read_pid, state_file, tail, write_private
from kit.broker.info import BrokerInfo
from kit.broker.jars import ensure_jars, java_command, kafka_version, require_java
from kit.broker.process import (
    HOST,
    POLL,
    admin,
    answers,
    free_port,
    is_our_broker,
    kafka_uuid,
    launch,
    listening,
    port_free,
    reap,
    run_format,
)
from kit.broker.properties import server_properties
from kit.broker.sasl import ADMIN_USER, SASL_MECHANISM, _admin_password, scram_format_args
from kit.errors import BrokerError

__all__ = ["format_storage", "info_from_state", "start", "wait_ready"]


def format_storage(
    java: str, libs: Path, data_dir: Path, admin_password: str | None = None
) -> None:
    """Format the node's KRaft storage (``--standalone``) unless that was done before."""
    logs = data_dir / "kraft-logs"
    if (logs / "meta.properties").is_file():
        return
    if logs.exists():
        shutil.rmtree(logs)  # a format that never finished
    config = str(data_dir / "server.properties")
    args: tuple[str, ...] = ("format", "--standalone", "-t", kafka_uuid(), "-c", config)
    args += scram_format_args(admin_password)
    run_format(java_command(java, libs, "kafka.tools.StorageTool", *args))


def info_from_state(data_dir: Path, pid: int, state: dict[str, Any]) -> BrokerInfo:  # Any: JSON
    """The BrokerInfo that a single broker's ``state.json`` describes."""
    password = state.get("admin_password")
    return BrokerInfo(
        bootstrap_servers=str(state["bootstrap_servers"]),
        pid=pid,
        port=int(state["port"]),
        version=str(state["version"]),
        data_dir=data_dir,
        sasl=bool(state.get("sasl", False)),
        admin_password=str(password) if password is not None else None,
    )


def start(data_dir: Path, port: int, timeout: float, sasl: bool | None) -> BrokerInfo:
    """Start the single broker in ``data_dir`` (formatting it first if new), with the lock held.

    Returns once it answers; a broker that fails to start is killed and its files removed.
    """
    old_pid = read_pid(data_dir)
    if old_pid is not None and is_our_broker(old_pid, data_dir):
        raise BrokerError(
            f"a broker from {data_dir} (pid {old_pid}) runs but does not answer; "
            "run `kit broker stop` and start again"
        )
    forget(data_dir, old_pid)
    if not port_free(port):
        raise BrokerError(
            f"port {port} is taken by another process; set KIT_BROKER_PORT or pass --port"
        )
    controller_port = port + 1 if port < 65535 and port_free(port + 1) else free_port()
    password = _admin_password(data_dir, sasl)
    java = require_java()
    version = kafka_version()
    libs = ensure_jars(version)
    config = data_dir / "server.properties"
    write_private(config, server_properties(port, controller_port, data_dir, password))
    format_storage(java, libs, data_dir, password)

    bootstrap = f"{HOST}:{port}"
    info = BrokerInfo(bootstrap, 0, port, version, data_dir, password is not None, password)
    command = java_command(java, libs, "kafka.Kafka", str(config))
    started = time.monotonic()
    proc = launch(command, data_dir)
    try:
        wait_ready(proc, info, started + timeout, timeout)
    except BaseException:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        forget(data_dir, proc.pid)
        reap(proc.pid)
        raise
    state = {
        "pid": proc.pid,
        "bootstrap_servers": bootstrap,
        "port": port,
        "controller_port": controller_port,
        "version": version,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "startup_seconds": round(time.monotonic() - started, 2),
        "sasl": info.sasl,
    }
    if info.sasl:
        state.update(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=SASL_MECHANISM,
            admin_user=ADMIN_USER,
            admin_password=password,
        )
    write_private(state_file(data_dir), json.dumps(state, indent=2) + "\n")
    return info_from_state(data_dir, proc.pid, state)


def wait_ready(
    proc: subprocess.Popen[bytes], info: BrokerInfo, deadline: float, timeout: float
) -> None:
    """Wait until the broker run by ``proc`` answers, or raise BrokerError with its log."""
    client = None
    bootstrap, port, data_dir = info.bootstrap_servers, info.port, info.data_dir
    while True:
        if proc.poll() is not None:
            raise BrokerError(
                f"the broker exited with code {proc.returncode} while starting; "
                f"last lines of {log_file(data_dir)}:\n{tail(log_file(data_dir))}"
            )
        if client is None and listening(port):
            client = admin(bootstrap, info.client_config())  # once it listens: no backoff
        left = deadline - time.monotonic()
        if client is not None and answers(bootstrap, max(min(left, 2.0), 0.1), client):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the broker did not answer at {bootstrap} within {timeout:.0f}s; "
                f"last lines of {log_file(data_dir)}:\n{tail(log_file(data_dir))}"
            )
        time.sleep(POLL)
