"""Start, check and stop a local single-node Apache Kafka (KRaft) broker run from cached jars.

With ``sasl=True`` (``kit broker start --sasl``) the client listener is SASL_PLAINTEXT with
SCRAM-SHA-512 and ACLs are enforced by KRaft's StandardAuthorizer:

- the super user ``admin`` gets its password from ``KIT_BROKER_ADMIN_PASSWORD`` or a
  generated one; its SCRAM credential is written into the metadata log when the storage is
  formatted (``StorageTool format --add-scram``), so the broker can authenticate to itself;
- the broker talks to itself (inter-broker: transaction markers) over the SASL listener as
  ``admin``;
- the controller listener stays PLAINTEXT on 127.0.0.1, where the broker's own principal is
  ``User:ANONYMOUS``; the controller authorizes broker registration and forwarded requests
  with that principal, so it is a super user too. Anyone who can reach the controller port
  on this host is therefore a super user: this is a local development broker.

A data dir keeps the mode it was formatted with (``sasl.json`` beside the data, mode 0600);
starting it in the other mode is refused. :func:`add_scram_user` and :func:`add_acls` add
users and ACLs as the super user, for tests.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    "ADMIN_USER",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "SASL_MECHANISM",
    "BrokerInfo",
    "add_acls",
    "add_scram_user",
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

SASL_MECHANISM = "SCRAM-SHA-512"
"""The SASL mechanism of a broker started with ``sasl=True``."""

ADMIN_USER = "admin"
"""The super user of a SASL broker; its password: ``KIT_BROKER_ADMIN_PASSWORD`` or generated."""

HOST = "127.0.0.1"
_PASSWORD_CHARS = re.compile(r"[A-Za-z0-9._~!@#$%^&*+:;?/-]+")  # safe in JAAS, --add-scram
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
    sasl: bool = False
    """True when clients must authenticate (SASL_PLAINTEXT, SCRAM-SHA-512) and ACLs apply."""
    admin_password: str | None = field(default=None, repr=False)
    """The super user's password (SASL only)."""

    def client_config(self) -> dict[str, str]:
        """librdkafka settings that connect to this broker (as the super user if SASL)."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl:
            config.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": SASL_MECHANISM,
                    "sasl.username": ADMIN_USER,
                    "sasl.password": self.admin_password or "",
                }
            )
        return config

    def client_env(self) -> dict[str, str]:
        """The KIT_* variables that make kit connect to this broker (as the super user if SASL)."""
        env = {"KIT_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        for key, value in self.client_config().items():
            if key != "bootstrap.servers":
                env["KIT_KAFKA_" + key.upper().replace(".", "_")] = value
        return env


def broker_dir() -> Path:
    """Return the broker's data and state folder: ``KIT_BROKER_DIR`` or ``~/.cache/kit/broker``."""
    value = os.environ.get("KIT_BROKER_DIR", "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "kit" / "broker"
    return path.resolve()


def server_properties(
    port: int, controller_port: int, data_dir: Path, admin_password: str | None = None
) -> str:
    """Return the ``server.properties`` text of a combined broker+controller single node.

    With ``admin_password`` the client listener is SASL_PLAINTEXT (SCRAM-SHA-512) with ACLs,
    and the broker authenticates to itself as the super user ``admin``.
    """
    client = "SASL_PLAINTEXT" if admin_password is not None else "PLAINTEXT"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"{client}://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"{client}://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
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
    if admin_password is not None:
        login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        settings.update(
            {
                "sasl.enabled.mechanisms": SASL_MECHANISM,
                "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
                f"listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config": (
                    f'{login} required username="{ADMIN_USER}" password="{admin_password}";'
                ),
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                # User:ANONYMOUS is the broker itself on the PLAINTEXT controller listener.
                "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "false",
            }
        )
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


def _sasl_file(data_dir: Path) -> Path:
    return data_dir / "sasl.json"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)
        handle.write(text)


def _admin_password(data_dir: Path, sasl: bool | None) -> str | None:
    """The super user's password if this start is SASL, else None; checks the data's mode.

    ``sasl=None`` follows the data dir (plain for a fresh one).
    """
    formatted = (data_dir / "kraft-logs" / "meta.properties").is_file()
    try:
        saved = json.loads(_sasl_file(data_dir).read_text())["admin_password"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = None
    wanted = os.environ.get("KIT_BROKER_ADMIN_PASSWORD", "") or None
    if formatted:
        if saved is None and sasl:
            raise BrokerError(
                f"the broker data in {data_dir} was formatted without SASL; "
                "set KIT_BROKER_DIR to another folder for a SASL broker"
            )
        if saved is not None and sasl is False:
            raise BrokerError(
                f"the broker data in {data_dir} was formatted for SASL; start it with --sasl, "
                "or set KIT_BROKER_DIR to another folder"
            )
        if saved is not None and wanted is not None and wanted != saved:
            raise ConfigError(
                "KIT_BROKER_ADMIN_PASSWORD",
                f"differs from the admin password the broker data in {data_dir} was "
                "formatted with; unset it, or set KIT_BROKER_DIR to another folder",
            )
        return str(saved) if saved is not None else None
    if not sasl:
        _sasl_file(data_dir).unlink(missing_ok=True)  # left by a format that never finished
        return None
    password = wanted or saved or secrets.token_urlsafe(18)
    if not _PASSWORD_CHARS.fullmatch(password):
        raise ConfigError(
            "KIT_BROKER_ADMIN_PASSWORD",
            "use only letters, digits and ._~!@#$%^&*+:;?/- (no spaces, quotes, commas, "
            "brackets or backslashes)",
        )
    record = {"mechanism": SASL_MECHANISM, "admin_user": ADMIN_USER, "admin_password": password}
    _write_private(_sasl_file(data_dir), json.dumps(record, indent=2) + "\n")
    return str(password)


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


def _admin(bootstrap: str, config: Mapping[str, Any] | None = None) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "reconnect.backoff.max.ms": 500,
            **(config or {}),
        }
    )


def _answers(
    bootstrap: str, timeout: float, admin: Any = None, config: Mapping[str, Any] | None = None
) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request and lists itself."""
    host, _, port_text = bootstrap.rpartition(":")
    port = int(port_text)
    try:
        socket.create_connection((host, port), timeout=min(timeout, 1.0)).close()
    except OSError:
        return False
    try:
        if admin is None:  # not `admin or ...`: an AdminClient with no queued events is falsy
            admin = _admin(bootstrap, config)
        metadata = admin.list_topics(timeout=timeout)
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


def _format(java: str, libs: Path, data_dir: Path, admin_password: str | None = None) -> None:
    logs = data_dir / "kraft-logs"
    if (logs / "meta.properties").is_file():
        return
    if logs.exists():
        shutil.rmtree(logs)  # a format that never finished
    config = str(data_dir / "server.properties")
    args: tuple[str, ...] = ("format", "--standalone", "-t", _cluster_id(), "-c", config)
    if admin_password is not None:
        scram = f"{SASL_MECHANISM}=[name={ADMIN_USER},password={admin_password}]"
        args += ("--add-scram", scram)
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
    info = _info_from_state(data_dir, pid, state)
    if probe and not _answers(info.bootstrap_servers, timeout=3.0, config=info.client_config()):
        return None  # still starting, or hung
    return info


def running_address() -> str | None:
    """Return the running local broker's bootstrap address, or None.

    Cheap (a process check and a file read, no network): it is called for every client
    the kit makes without KIT_BOOTSTRAP_SERVERS; the client's own connection reports a
    broker that runs but does not answer.
    """
    info = status(probe=False)
    return info.bootstrap_servers if info else None


def start(port: int | None = None, *, timeout: float = 120, sasl: bool | None = None) -> BrokerInfo:
    """Start the local broker, or return the one already running from the same data dir.

    ``port`` defaults to ``KIT_BROKER_PORT`` or 9092. ``timeout`` bounds the wait for the
    broker to answer requests; the one-time jar download has its own deadline (15 min).
    ``sasl=True`` runs it with SASL/SCRAM-SHA-512 and ACLs (see the module docstring),
    ``False`` without; ``None`` (the default) keeps the mode its data was formatted with,
    plain for new data. Raises BrokerError when Java is missing, the port is taken, the
    data dir was formatted in the other mode, or the broker fails.
    """
    data_dir = broker_dir()
    wanted = _requested_port(port)
    running = status()
    if running is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        with locked(data_dir / ".lock", timeout + 30, "starting the broker"):
            running = status()  # someone else may have started it while we waited
            if running is None:
                return _start_locked(data_dir, wanted, timeout, sasl)
    if (port is not None and running.port != port) or (sasl is not None and running.sasl != sasl):
        mode = "with SASL" if running.sasl else "without SASL"
        raise BrokerError(
            f"a broker from {data_dir} already runs at {running.bootstrap_servers} ({mode}); "
            "stop it first or set KIT_BROKER_DIR"
        )
    return running


def _start_locked(data_dir: Path, port: int, timeout: float, sasl: bool | None) -> BrokerInfo:
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
    password = _admin_password(data_dir, sasl)
    java = require_java()
    version = kafka_version()
    libs = ensure_jars(version)
    config = data_dir / "server.properties"
    _write_private(config, server_properties(port, controller_port, data_dir, password))
    _format(java, libs, data_dir, password)

    bootstrap = f"{HOST}:{port}"
    info = BrokerInfo(bootstrap, 0, port, version, data_dir, password is not None, password)
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
        _wait_ready(proc, info, started + timeout, timeout)
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
        "sasl": info.sasl,
    }
    if info.sasl:
        state.update(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=SASL_MECHANISM,
            admin_user=ADMIN_USER,
            admin_password=password,
        )
    _write_private(_state_file(data_dir), json.dumps(state, indent=2) + "\n")
    return _info_from_state(data_dir, proc.pid, state)


def _wait_ready(
    proc: subprocess.Popen[bytes], info: BrokerInfo, deadline: float, timeout: float
) -> None:
    admin = None
    bootstrap, port, data_dir = info.bootstrap_servers, info.port, info.data_dir
    while True:
        if proc.poll() is not None:
            raise BrokerError(
                f"the broker exited with code {proc.returncode} while starting; "
                f"last lines of {_log_file(data_dir)}:\n{_tail(_log_file(data_dir))}"
            )
        if admin is None and _listening(port):
            admin = _admin(bootstrap, info.client_config())  # once it listens: no backoff
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


# -- users and ACLs of a SASL broker (as the super user) ---------------------------------


def _sasl_admin(info: BrokerInfo | None) -> Any:
    info = info or status()
    if info is None or not info.sasl:
        raise BrokerError(f"no SASL broker runs from {broker_dir()}; run `kit broker start --sasl`")
    return _admin(info.bootstrap_servers, info.client_config())


def _settle(check: Any, deadline: float, what: str) -> None:
    """Wait until ``check()`` is true: the controller commits first, the broker applies after."""
    while not check():
        if time.monotonic() >= deadline:
            raise BrokerError(f"the broker did not show {what} in time")
        time.sleep(0.05)


def add_scram_user(
    name: str, password: str, *, info: BrokerInfo | None = None, timeout: float = 30.0
) -> None:
    """Create (or re-password) the SCRAM-SHA-512 user ``name`` on a SASL broker.

    Runs as the super user on ``info`` (default: the running local broker) and returns once
    the broker accepts the credential. Raises BrokerError if no SASL broker runs.
    """
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = _sasl_admin(info)
    deadline = time.monotonic() + timeout
    upsert = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert], request_timeout=timeout).values():
        future.result(timeout=timeout)

    def known() -> bool:
        try:
            found = admin.describe_user_scram_credentials([name], request_timeout=5)
            return bool(found[name].result(timeout=5).scram_credential_infos)
        except Exception:
            return False

    _settle(known, deadline, f"user {name!r}")


def add_acls(
    user: str,
    *,
    topics: Iterable[str] = (),
    groups: Iterable[str] = (),
    cluster: Iterable[str] = (),
    operations: Iterable[str] = ("ALL",),
    prefixed: bool = False,
    info: BrokerInfo | None = None,
    timeout: float = 30.0,
) -> None:
    """Allow ``User:<user>`` each of ``operations`` (READ, WRITE, DESCRIBE, CREATE, ALL, ...)
    on each topic and group named, from any host; ``cluster`` lists operations on the cluster
    itself (e.g. ``("CREATE",)`` to create topics). ``prefixed=True`` makes the topic and group
    names prefixes. Runs as the super user on ``info`` (default: the running local broker) and
    returns once the broker enforces them. Raises BrokerError if no SASL broker runs.
    """
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
    principal = f"User:{user}"
    allow = AclPermissionType.ALLOW
    wanted = [(ResourceType.TOPIC, t) for t in topics] + [(ResourceType.GROUP, g) for g in groups]
    bindings = [
        AclBinding(kind, name, pattern, principal, "*", AclOperation[op.upper()], allow)
        for kind, name in wanted
        for op in operations
    ]
    bindings += [
        AclBinding(
            ResourceType.BROKER,
            "kafka-cluster",
            ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation[op.upper()],
            allow,
        )
        for op in cluster
    ]
    if not bindings:
        return
    admin = _sasl_admin(info)
    deadline = time.monotonic() + timeout
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    anything: Any = None  # a filter field of None matches every value
    everything = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        principal,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )

    def enforced() -> bool:
        try:
            present = set(admin.describe_acls(everything, request_timeout=5).result(timeout=5))
        except Exception:
            return False
        return all(binding in present for binding in bindings)

    _settle(enforced, deadline, f"the ACLs of {principal}")


def _connect_lines(info: BrokerInfo) -> list[str]:
    """How to connect kit to a SASL broker, as shell lines."""
    lines = [
        f"SASL_PLAINTEXT with {SASL_MECHANISM} and ACLs (StandardAuthorizer); "
        f"super user {ADMIN_USER!r}. Connect kit as the super user with:"
    ]
    lines += [f"  export {key}={shlex.quote(value)}" for key, value in info.client_env().items()]
    return lines


def cli_main(argv: list[str]) -> int:
    """Run ``kit broker start|stop|status``; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="kit broker", description="Run a local single-node Apache Kafka broker."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="start the broker (or report the running one)")
    start_cmd.add_argument("--port", type=int, default=None, help="client port (default 9092)")
    start_cmd.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    start_cmd.add_argument(
        "--sasl",
        action="store_true",
        default=None,
        help="clients authenticate with SASL/SCRAM-SHA-512 and ACLs apply (super user admin, "
        "password KIT_BROKER_ADMIN_PASSWORD or generated); kept by the data dir",
    )
    commands.add_parser("stop", help="stop the broker")
    commands.add_parser("status", help="exit 0 if the broker runs and answers, else 1")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "start":
            info = start(args.port, timeout=args.timeout, sasl=args.sasl)
            print(
                f"kafka {info.version} ready at {info.bootstrap_servers} "
                f"(pid {info.pid}, data {info.data_dir})"
            )
            if info.sasl:
                print("\n".join(_connect_lines(info)))
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
        if info_or_none.sasl:
            print("\n".join(_connect_lines(info_or_none)))
        return 0
    except KitError as exc:
        print(f"kit broker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # start() already stopped what it launched
        print("kit broker: interrupted", file=sys.stderr)
        return 130
