"""Kafka jars from Maven Central, cached outside the repo by version, and the JVMs that run
them: the broker's (Java 17+) and the local schema registry's (Java 21+, chosen explicitly)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kit.config import load_tool_settings
from kit.errors import BrokerError

__all__ = [
    "JDK_ROOTS",
    "KAFKA_VERSION",
    "LOG4J_CONFIG",
    "POM_PATH",
    "Java",
    "JavaCandidate",
    "cache_root",
    "choose_java",
    "ensure_jars",
    "home_java",
    "installed_jdks",
    "jars_dir",
    "java_command",
    "java_major",
    "kafka_version",
    "locked",
    "path_java",
    "require_java",
    "run_maven",
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


def _require_mvn(why: str = "kit's local broker needs Maven to download the Kafka jars") -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"mvn not found on PATH: {why}")
    return mvn


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_maven(args: Sequence[str], cwd: Path, timeout: float, what: str, why: str) -> None:
    """Run ``mvn -q -B ARGS`` in ``cwd``; raise BrokerError with Maven's last lines on failure.

    ``what`` names the download in errors ("Kafka 4.4.0"); ``why`` says who needs Maven.
    """
    command = [_require_mvn(why), "-q", "-B", "-Dstyle.color=never", *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BrokerError(
            f"downloading {what} with Maven took longer than {timeout:.0f}s"
        ) from None
    if done.returncode != 0:
        output = _tail(done.stdout + "\n" + done.stderr)
        raise BrokerError(f"Maven could not download {what} (exit {done.returncode}):\n{output}")


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
        _require_mvn()
        if libs.exists():
            shutil.rmtree(libs)
        pom = home / "pom.xml"
        shutil.copyfile(POM_PATH, pom)
        args = [
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
            "-f",
            str(pom),
        ]
        what = f"Kafka {version}"
        run_maven(
            args, home, timeout, what, "kit's local broker needs Maven to download the Kafka jars"
        )
        if not broker_jar.is_file():
            raise BrokerError(f"Maven could not download {what}: {broker_jar} is missing")
        marker.write_text(f"{version}\n")
    return libs


@dataclass(frozen=True)
class JavaCandidate:
    """One place a ``java`` may come from, tried in order by :func:`choose_java`.

    ``java`` is None when the place is empty (a variable unset, no java on PATH); ``label``
    names it in messages ("JAVA_HOME (/opt/jdk)", "java on PATH (/usr/bin/java)"). A
    ``binding`` candidate is one the user set on purpose: if it does not fit, that is an
    error, not a reason to try the next one.
    """

    source: str
    java: str | None
    label: str
    binding: bool = False


@dataclass(frozen=True)
class Java:
    """The chosen ``java``: its path, major version, and the candidate's source."""

    path: str
    major: int
    source: str

    def describe(self) -> str:
        """``/usr/lib/jvm/x/bin/java (Java 25, from JAVA_HOME)``."""
        return f"{self.path} (Java {self.major}, from {self.source})"


JDK_ROOTS = (Path("/usr/lib/jvm"), Path("/Library/Java/JavaVirtualMachines"))
"""Where :func:`installed_jdks` looks for JDKs to suggest; nothing there is used unasked."""


def path_java() -> JavaCandidate:
    """The ``java`` on PATH as a candidate."""
    java = shutil.which("java")
    if java is None:
        return JavaCandidate("PATH", None, "java not found on PATH")
    return JavaCandidate("PATH", java, f"java on PATH ({java})")


def home_java(variable: str, home: str | Path | None, *, binding: bool = False) -> JavaCandidate:
    """``<home>/bin/java`` as a candidate named after ``variable`` (unset when ``home`` is)."""
    if home is None or not str(home).strip():
        return JavaCandidate(variable, None, f"{variable} unset")
    home = Path(home).expanduser()
    return JavaCandidate(variable, str(home / "bin" / "java"), f"{variable} ({home})", binding)


def java_major(java: str) -> int:
    """The major version ``java -version`` reports (8 for "1.8.0_392"); BrokerError if unknown."""
    if not os.access(java, os.X_OK):
        raise BrokerError(f"{java} does not exist or is not executable")
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
    return major


def choose_java(min_major: int, candidates: Sequence[JavaCandidate], user: str) -> Java:
    """The first candidate that is Java ``min_major`` or later, or BrokerError listing them all
    (or naming the first ``binding`` one that does not fit).

    ``user`` names what needs Java ("Apicurio Registry 3.3.3").
    """
    notes: list[str] = []
    for candidate in candidates:
        if candidate.java is None:
            notes.append(candidate.label)
            continue
        try:
            major = java_major(candidate.java)
        except BrokerError as exc:
            note = f"{candidate.label}: {exc}"
        else:
            if major >= min_major:
                return Java(candidate.java, major, candidate.source)
            note = f"{candidate.label} is Java {major}"
        if candidate.binding:
            raise BrokerError(f"{user} needs Java {min_major}+; {note}")
        notes.append(note)
    if len(notes) == 1:
        raise BrokerError(f"{notes[0]}: {user} needs Java {min_major}+")
    raise BrokerError(f"{user} needs Java {min_major}+; {', '.join(notes)}")


def installed_jdks(min_major: int) -> list[tuple[Path, int]]:
    """JDK homes under :data:`JDK_ROOTS` of Java ``min_major`` or later, newest first, with
    their versions: suggestions for an error message, never chosen by themselves."""
    found: dict[Path, tuple[Path, int]] = {}
    for root in JDK_ROOTS:
        for home in sorted(root.glob("*")) if root.is_dir() else []:
            if (home / "Contents" / "Home").is_dir():  # macOS bundles
                home = home / "Contents" / "Home"
            java = home / "bin" / "java"
            if home.is_symlink() or home.resolve() in found or not java.is_file():
                continue
            try:
                major = java_major(str(java))
            except BrokerError:
                continue
            if major >= min_major:
                found[home.resolve()] = (home, major)
    return sorted(found.values(), key=lambda pair: (-pair[1], str(pair[0])))


def require_java(
    min_major: int = 17,
    candidates: Sequence[JavaCandidate] | None = None,
    *,
    user: str = "kit's local broker",
) -> str:
    """Return the path of the first Java ``min_major``+ among ``candidates`` (default: the
    ``java`` on PATH), or raise BrokerError saying what each one is."""
    chosen = choose_java(min_major, [path_java()] if candidates is None else candidates, user)
    return chosen.path


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
