"""Run tests/interop/java/KitInterop.java: its jars resolved by Maven once and cached outside
the repo (as kit.broker.jars caches the broker's), then `java` in single-file source mode.

The jars land in ``<kit cache>/java-interop-<hash>/libs``, the hash taken over the pom and
the Kafka version (the local broker's: KIT_KAFKA_VERSION or kit.broker.KAFKA_VERSION), so a
changed pom gets a folder of its own. A marker is written only after Maven succeeded, under
an exclusive file lock shared by concurrent test processes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kit.broker.jars import cache_root, kafka_version, locked, require_java, run_maven

__all__ = ["JavaMissing", "ensure_libs", "run_interop", "tools"]

HERE = Path(__file__).resolve().parent / "java"
POM = HERE / "pom.xml"
SOURCE = HERE / "KitInterop.java"
_MARKER = ".complete"
_DOWNLOAD_TIMEOUT = 600.0


class JavaMissing(Exception):
    """No usable Java 17+ or Maven on PATH (the message says which)."""


def tools() -> tuple[str, str]:
    """(java, mvn) on PATH; JavaMissing naming what is missing."""
    try:
        java = require_java(17, user="KitInterop (tests/interop/java)")
    except Exception as exc:  # BrokerError: not found, too old, or not runnable
        raise JavaMissing(str(exc)) from None
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JavaMissing("mvn not found on PATH: the Java interop tests resolve jars with it")
    return java, mvn


def ensure_libs(timeout: float = _DOWNLOAD_TIMEOUT) -> Path:
    """The folder of KitInterop's jars (kafka-clients, avro, slf4j-nop), downloaded once."""
    version = kafka_version()
    digest = hashlib.sha256(POM.read_bytes() + version.encode()).hexdigest()[:12]
    home = cache_root() / f"java-interop-{digest}"
    libs, marker = home / "libs", home / _MARKER
    if marker.is_file():
        return libs
    with locked(home / ".lock", timeout, "downloading the Java interop jars"):
        if marker.is_file():  # another process just finished
            return libs
        if libs.exists():
            shutil.rmtree(libs)
        pom = home / "pom.xml"
        shutil.copyfile(POM, pom)
        args = ["dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
        args += ["-DincludeScope=runtime", f"-Dkafka.version={version}", "-f", str(pom)]
        run_maven(args, home, timeout, "the Java interop jars", "kit's Java interop tests")
        marker.write_text(f"{version}\n")
    return libs


def run_interop(
    java: str, libs: Path, mode: str, *args: str, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Run one KitInterop mode and return its JSON lines; AssertionError with its stderr
    if it fails. `timeout` is the program's own deadline; the process gets 60 s more to
    start the JVM and compile the source."""
    command = [java, "-cp", str(libs / "*"), str(SOURCE), mode, *args]
    command += ["--timeout", f"{timeout:.0f}"]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"KitInterop {mode} still running after {timeout + 60:.0f}s") from exc
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"KitInterop {mode} exited {done.returncode}:\n{stderr}"
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
