"""Kafka jars from Maven Central, cached outside the repo by version, and the JVM that runs them."""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kit.config import load_tool_settings
from kit.errors import BrokerError

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_CONFIG",
    "POM_PATH",
    "cache_root",
    "ensure_jars",
    "jars_dir",
    "java_command",
    "kafka_version",
    "locked",
    "require_java",
]

KAFKA_VERSION = "4.4.0"
"""Kafka release the local broker runs unless ``KIT_KAFKA_VERSION`` says otherwise."""

POM_PATH = Path(__file__).with_name("pom.xml")
"""The Maven project that lists the broker's runtime dependencies."""

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
"""Quiet log4j2 configuration the broker and its tools run with."""

_MARKER = ".complete"
_DOWNLOAD_TIMEOUT = 900.0


def kafka_version() -> str:
    """Return the Kafka version to run: ``KIT_KAFKA_VERSION`` or :data:`KAFKA_VERSION`."""
    return load_tool_settings().kafka_version or KAFKA_VERSION


def cache_root() -> Path:
    """Return kit's cache folder: ``KIT_CACHE_DIR`` or ``~/.cache/kit``."""
    return load_tool_settings().cache_root


def jars_dir(version: str | None = None) -> Path:
    """Return the folder holding the jars of a Kafka version (it may not exist yet)."""
    return cache_root() / f"kafka-{version or kafka_version()}" / "libs"


@contextlib.contextmanager
def locked(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed), waiting at most ``timeout`` s.

    ``what`` names the guarded job in the error raised when the deadline passes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"timed out after {timeout:.0f}s waiting for another process "
                        f"to finish {what} (lock {path})"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _require_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn not found on PATH: kit's local broker needs Maven to download the Kafka jars"
        )
    return mvn


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_jars(version: str | None = None, *, timeout: float = _DOWNLOAD_TIMEOUT) -> Path:
    """Return the folder of the broker's runtime jars, downloading them with Maven once.

    The jars land in ``<cache>/kafka-<version>/libs``. A marker file is written only
    after Maven succeeded, so a partial download is never trusted, and an exclusive
    file lock keeps concurrent callers (pytest-xdist workers, two shells) from
    downloading into the same folder at once.
    """
    version = version or kafka_version()
    libs = jars_dir(version)
    home = libs.parent
    marker = home / _MARKER
    broker_jar = libs / f"kafka_2.13-{version}.jar"
    if marker.is_file() and broker_jar.is_file():
        return libs
    with locked(home / ".lock", timeout, f"downloading Kafka {version} jars"):
        if marker.is_file() and broker_jar.is_file():  # another process just finished
            return libs
        marker.unlink(missing_ok=True)
        mvn = _require_mvn()
        if libs.exists():
            shutil.rmtree(libs)
        pom = home / "pom.xml"
        shutil.copyfile(POM_PATH, pom)
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
            "-f",
            str(pom),
        ]
        try:
            done = subprocess.run(
                command,
                cwd=home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(
                f"downloading Kafka {version} jars with Maven took longer than {timeout:.0f}s"
            ) from None
        if done.returncode != 0 or not broker_jar.is_file():
            output = _tail(done.stdout + "\n" + done.stderr)
            raise BrokerError(
                f"Maven could not download Kafka {version} (exit {done.returncode}):\n{output}"
            )
        marker.write_text(f"{version}\n")
    return libs


def require_java() -> str:
    """Return the path of a Java 17+ ``java`` on PATH, or raise BrokerError saying what is wrong."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found on PATH: kit's local broker needs Java 17+")
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BrokerError(f"could not run {java} -version: {exc}") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        raise BrokerError(f"could not read the Java version from {java} -version")
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0_392" style
        major = int(found.group(2))
    if major < 17:
        raise BrokerError(f"{java} is Java {major}: kit's local broker needs Java 17+")
    return java


def java_command(java: str, libs: Path, main: str, *args: str, heap: str = "1g") -> list[str]:
    """Return the command line running ``main`` from the jars in ``libs`` with kit's JVM flags.

    ``heap`` is the JVM's maximum heap (``-Xmx``): 1g for a single broker, less for each
    node of a local cluster.
    """
    return [
        java,
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        str(libs / "*"),
        main,
        *args,
    ]
