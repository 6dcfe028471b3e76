"""kit's local schema registry: Apicurio Registry from Maven Central, run on a JDK 21+.

``kit schema-registry start|stop|status`` runs it the way ``kit broker`` runs Kafka: resolved
by Maven once and cached by version outside the repo (``<cache>/apicurio-<version>/app``),
launched as a local process bound to 127.0.0.1, no Docker. Apicurio Registry 3.x serves the
Confluent Schema Registry API at ``/apis/ccompat/v7``: that URL is ``KIT_SCHEMA_REGISTRY_URL``.

- **Java 21+**, chosen explicitly (:func:`registry_java`): ``KIT_SCHEMA_REGISTRY_JAVA_HOME``
  (if set, it must be 21+), else ``JAVA_HOME`` if 21+, else ``java`` on PATH if 21+. Nothing
  else is picked; the error lists each candidate and the JDKs found under /usr/lib/jvm.
- **Global compatibility rule BACKWARD**, Confluent Schema Registry's default. Apicurio has
  no global rule unless told (``GET /config`` answers NONE), so tests against it would accept
  schemas a Confluent registry in production refuses.
- **In-memory storage** (Apicurio's default H2 database in memory): a restart starts empty.

Files in the data dir (``KIT_SCHEMA_REGISTRY_DIR``, default ``~/.cache/kit/schema-registry``):
``registry.pid``, ``registry.log`` and ``state.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.broker import jars
from kit.broker.files import forget, log_file, read_pid, read_state, state_file, tail, write_private
from kit.broker.jars import (
    Java,
    JavaCandidate,
    cache_root,
    choose_java,
    home_java,
    installed_jdks,
    locked,
    path_java,
    run_maven,
)
from kit.broker.process import (
    HOST,
    POLL,
    free_port,
    is_our_process,
    launch,
    port_free,
    reap,
    terminate,
)
from kit.config import load_tool_settings
from kit.errors import BrokerError, ConfigError

__all__ = [
    "API_PATH",
    "JAVA_HOME_VARIABLE",
    "MIN_JAVA",
    "POM_PATH",
    "RegistryInfo",
    "apicurio_version",
    "app_dir",
    "ensure_app",
    "ensure_running",
    "registry_command",
    "registry_dir",
    "registry_java",
    "start",
    "status",
    "stop",
]

API_PATH = "/apis/ccompat/v7"
"""Where Apicurio serves the Confluent-compatible API (what confluent-kafka's client talks)."""

MIN_JAVA = 21
"""Apicurio Registry 3.2+ is built for Java 21."""

JAVA_HOME_VARIABLE = "KIT_SCHEMA_REGISTRY_JAVA_HOME"
"""The JDK the registry runs on, when set (it must then be Java 21+)."""

POM_PATH = Path(__file__).with_name("apicurio-pom.xml")
"""The empty Maven project ``mvn dependency:copy`` runs in."""

_NAME = "registry"  # registry.pid, registry.log
_MARKER = ".complete"
_DOWNLOAD_TIMEOUT = 900.0
_DIR_FLAG = "-Dkit.schema-registry.dir="  # marks our JVM in its command line


@dataclass(frozen=True)
class RegistryInfo:
    """A running local schema registry: its URL, process, JVM and files."""

    url: str
    """The Confluent-compatible API, ``http://127.0.0.1:<port>/apis/ccompat/v7``."""
    pid: int
    port: int
    management_port: int
    """Quarkus' management interface (``/health/ready``), on loopback."""
    version: str
    java: Java
    data_dir: Path
    startup_seconds: float | None = None
    launched: bool = False
    """True when this :func:`start` launched it (its caller may stop it), False when it was
    already running (another process's: leave it running)."""


def registry_dir() -> Path:
    """The registry's files: ``KIT_SCHEMA_REGISTRY_DIR`` or ``~/.cache/kit/schema-registry``."""
    return load_tool_settings().schema_registry_dir.expanduser().resolve()


def apicurio_version() -> str:
    """The Apicurio Registry release to run: ``KIT_APICURIO_VERSION`` or 3.3.3."""
    return load_tool_settings().apicurio_version


def app_dir(version: str | None = None) -> Path:
    """The folder of the unpacked Apicurio app (``quarkus-run.jar``); it may not exist yet."""
    return cache_root() / f"apicurio-{version or apicurio_version()}" / "app"


def ensure_app(version: str | None = None, *, timeout: float = _DOWNLOAD_TIMEOUT) -> Path:
    """Return the unpacked Apicurio app of ``version``, fetching it with Maven once.

    Maven copies ``io.apicurio:apicurio-registry-app:<version>:tar.gz:all`` (about 160 MB)
    into the cache, where it is unpacked and deleted. As for the Kafka jars, a marker file is
    written only once ``quarkus-run.jar`` is there, under an exclusive file lock.
    """
    version = version or apicurio_version()
    app = app_dir(version)
    home = app.parent
    marker, jar = home / _MARKER, app / "quarkus-run.jar"
    if marker.is_file() and jar.is_file():
        return app
    what = f"Apicurio Registry {version}"
    with locked(home / ".lock", timeout, f"downloading {what}"):
        if marker.is_file() and jar.is_file():  # another process just finished
            return app
        marker.unlink(missing_ok=True)
        download = home / "download"
        for stale in (app, download):
            if stale.exists():
                shutil.rmtree(stale)
        pom = home / "pom.xml"
        shutil.copyfile(POM_PATH, pom)
        artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
        args = ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={download}"]
        why = "kit's local schema registry needs Maven to download Apicurio Registry"
        run_maven([*args, "-f", str(pom)], home, timeout, what, why)
        archives = sorted(download.glob("*.tar.gz"))
        if not archives:
            raise BrokerError(f"Maven could not download {what}: no archive in {download}")
        _unpack(archives[0], app)
        shutil.rmtree(download)
        if not jar.is_file():
            raise BrokerError(f"the {what} archive holds no quarkus-run.jar at its root")
        marker.write_text(f"{version}\n")
    return app


def _unpack(archive: Path, into: Path) -> None:
    """Unpack a tar archive into ``into``, refusing members outside it."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+
            tar.extractall(into, filter="data")
            return
        for member in tar.getmembers():
            for name in (member.name, member.linkname):
                if name and (os.path.isabs(name) or ".." in Path(name).parts):
                    raise BrokerError(f"{archive} holds an unsafe path: {member.name} ({name})")
        tar.extractall(into)


def registry_java(version: str | None = None) -> Java:
    """The JDK 21+ to run the registry on, and where it came from.

    Tried in order: ``KIT_SCHEMA_REGISTRY_JAVA_HOME`` (when set it must be 21+: an error
    otherwise, never a fallback), ``JAVA_HOME``, ``java`` on PATH. When none fits, the
    BrokerError names each one and the JDKs 21+ installed under /usr/lib/jvm.
    """
    user = f"Apicurio Registry {version or apicurio_version()}"
    chosen = load_tool_settings().schema_registry_java_home
    candidates: list[JavaCandidate] = []
    if chosen is not None:
        candidates.append(home_java(JAVA_HOME_VARIABLE, chosen, binding=True))
    candidates += [home_java("JAVA_HOME", os.environ.get("JAVA_HOME")), path_java()]
    try:
        return choose_java(MIN_JAVA, candidates, user)
    except BrokerError as exc:
        found = ", ".join(f"{home}, Java {major}" for home, major in installed_jdks(MIN_JAVA))
        roots = " or ".join(str(root) for root in jars.JDK_ROOTS)
        where = f"found here: {found}" if found else f"none found in {roots}"
        raise BrokerError(
            f"{exc}. Set {JAVA_HOME_VARIABLE} to a JDK {MIN_JAVA}+ ({where})"
        ) from None


def registry_command(
    java: str, app: Path, data_dir: Path, port: int, management_port: int
) -> list[str]:
    """The command line of the registry's JVM: loopback only, BACKWARD, in memory."""
    return [
        java,
        "-Xms128m",
        "-Xmx512m",
        "-Djava.awt.headless=true",
        f"{_DIR_FLAG}{data_dir}",
        f"-Dquarkus.http.host={HOST}",
        f"-Dquarkus.http.port={port}",
        f"-Dquarkus.management.host={HOST}",
        f"-Dquarkus.management.port={management_port}",
        "-Dquarkus.http.access-log.enabled=false",
        # Confluent Schema Registry's default rule; Apicurio has none unless told.
        "-Dapicurio.rules.global.compatibility=BACKWARD",
        "-jar",
        str(app / "quarkus-run.jar"),
    ]


def _is_ours(pid: int, data_dir: Path) -> bool:
    return is_our_process(pid, "quarkus-run.jar", f"{_DIR_FLAG}{data_dir}")


def _our_pid(data_dir: Path) -> int | None:
    """The pid of the registry's JVM launched from ``data_dir`` (per its pid file), if it runs."""
    pid = read_pid(data_dir, _NAME)
    return pid if pid is not None and _is_ours(pid, data_dir) else None


def _answers(url: str, timeout: float) -> bool:
    """True when ``GET <url>/subjects`` answers 200 (the API kit uses, not just a port)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(f"{url}/subjects", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _requested_port(port: int | None) -> int:
    if port is None:
        port = load_tool_settings().schema_registry_port
    if not 0 < port < 65536:
        raise ConfigError("port", f"must be between 1 and 65535, got {port}")
    return port


def _info(data_dir: Path, pid: int, state: dict[str, Any]) -> RegistryInfo:  # Any: JSON
    java = Java(str(state["java"]), int(state["java_major"]), str(state["java_source"]))
    seconds = state.get("startup_seconds")
    return RegistryInfo(
        url=str(state["url"]),
        pid=pid,
        port=int(state["port"]),
        management_port=int(state["management_port"]),
        version=str(state["version"]),
        java=java,
        data_dir=data_dir,
        startup_seconds=float(seconds) if seconds is not None else None,
    )


def status(*, probe: bool = True, wait: float = 3.0) -> RegistryInfo | None:
    """The local registry's info if it runs and answers (within ``wait`` s), else None.

    Stale pid and state files of a registry that died are removed. ``probe=False`` skips the
    HTTP request: the process runs and its state file gives the URL.
    """
    data_dir = registry_dir()
    pid = read_pid(data_dir, _NAME)
    if pid is None or not _is_ours(pid, data_dir):
        if pid is not None or state_file(data_dir).exists():
            with contextlib.suppress(BrokerError):  # skip if someone is starting it right now
                with locked(data_dir / ".lock", 0, "starting the schema registry"):
                    forget(data_dir, pid, _NAME)
        return None
    state = read_state(data_dir)
    if state is None:
        return None  # still starting
    info = _info(data_dir, pid, state)
    if probe and not _answers(info.url, wait):
        return None  # still starting, or hung
    return info


def start(port: int | None = None, *, timeout: float = 60.0) -> RegistryInfo:
    """Start the local registry, or return the one already running from the same data dir
    (``launched`` tells which).

    ``port`` defaults to ``KIT_SCHEMA_REGISTRY_PORT`` or 8081. ``timeout`` bounds the wait for
    the API to answer (it starts in about 6 s); the one-time download has its own deadline.
    Raises BrokerError when no JDK 21+ is chosen, Maven is missing, the port is taken, or the
    registry fails to start (with the last lines of its log).
    """
    data_dir = registry_dir()
    wanted = _requested_port(port)
    running = status()
    if running is None:
        # our own registry may hold the port: still starting (another process launches it)
        # or slow to answer; it is waited for below, with the lock
        if not port_free(wanted) and _our_pid(data_dir) is None:
            raise BrokerError(
                f"port {wanted} is taken by another process; "
                "set KIT_SCHEMA_REGISTRY_PORT or pass --port"
            )
        version = apicurio_version()
        java = registry_java(version)
        app = ensure_app(version)
        data_dir.mkdir(parents=True, exist_ok=True)
        with locked(data_dir / ".lock", timeout + 30, "starting the schema registry"):
            # someone else may have started it while we waited, or ours is slow to answer
            running = status(wait=timeout)
            if running is None:
                return _launch(data_dir, wanted, java, app, version, timeout)
    if port is not None and running.port != port:
        raise BrokerError(
            f"a schema registry from {data_dir} already runs at {running.url}; "
            "stop it first or set KIT_SCHEMA_REGISTRY_DIR"
        )
    return running


def _launch(
    data_dir: Path, port: int, java: Java, app: Path, version: str, timeout: float
) -> RegistryInfo:
    """Launch the registry's JVM with the lock held; return once its API answers."""
    old_pid = read_pid(data_dir, _NAME)
    if old_pid is not None and _is_ours(old_pid, data_dir):
        raise BrokerError(
            f"a schema registry from {data_dir} (pid {old_pid}) runs but does not answer; "
            "run `kit schema-registry stop` and start again"
        )
    forget(data_dir, old_pid, _NAME)
    management_port = free_port()
    url = f"http://{HOST}:{port}{API_PATH}"
    command = registry_command(java.path, app, data_dir, port, management_port)
    started = time.monotonic()
    proc = launch(command, data_dir, name=_NAME)
    try:
        _wait_ready(proc, url, data_dir, started + timeout, timeout)
    except BaseException:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        forget(data_dir, proc.pid, _NAME)
        reap(proc.pid)
        raise
    state = {
        "pid": proc.pid,
        "url": url,
        "port": port,
        "management_port": management_port,
        "version": version,
        "java": java.path,
        "java_major": java.major,
        "java_source": java.source,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "startup_seconds": round(time.monotonic() - started, 2),
    }
    write_private(state_file(data_dir), json.dumps(state, indent=2) + "\n")
    return dataclasses.replace(_info(data_dir, proc.pid, state), launched=True)


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, data_dir: Path, deadline: float, timeout: float
) -> None:
    """Wait until the registry's API answers, or raise BrokerError with its log's last lines."""
    log = log_file(data_dir, _NAME)
    while True:
        if proc.poll() is not None:
            raise BrokerError(
                f"the schema registry exited with code {proc.returncode} while starting; "
                f"last lines of {log}:\n{tail(log, what='schema registry')}"
            )
        left = deadline - time.monotonic()
        if _answers(url, max(min(left, 1.0), 0.1)):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the schema registry did not answer at {url} within {timeout:.0f}s; "
                f"last lines of {log}:\n{tail(log, what='schema registry')}"
            )
        time.sleep(POLL)


def stop(timeout: float = 30) -> bool:
    """Stop the local registry (SIGTERM, then SIGKILL after ``timeout`` s); True if it ran.

    Its schemas are gone: the storage is in memory.
    """
    data_dir = registry_dir()
    pid = read_pid(data_dir, _NAME)
    if pid is None or not _is_ours(pid, data_dir):
        forget(data_dir, pid, _NAME)
        return False
    terminate([pid], timeout, "the schema registry")
    forget(data_dir, pid, _NAME)
    return True


def ensure_running() -> RegistryInfo:
    """The running local registry, started first if needed."""
    return status() or start()
