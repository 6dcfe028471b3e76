"""Unit tests of ``kit schema-registry``: the JDK choice, the command line, the one-time
download, stale files, the CLI's exit codes. Fake ``java`` and ``mvn`` scripts stand in for
the real ones; a small Python HTTP server plays the registry's JVM."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from kit.broker import jars
from kit.broker import schema_registry as registry
from kit.cli import main as kit_main
from kit.errors import BrokerError, ConfigError
from kit.testing import schema_registry as testing_registry

_FAKE_REGISTRY = """
import http.server, sys
port = int(next(a for a in sys.argv if a.startswith("-Dquarkus.http.port=")).split("=")[1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/apis/ccompat/v7/subjects"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"[]" if ok else b"")
    def log_message(self, *args):
        pass
print("fake registry listening", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def registry_cli(*args: str) -> int:
    """`kit schema-registry ARGS...` through the kit CLI; wrong usage counts as exit 2."""
    try:
        return kit_main(["schema-registry", *args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    for name in (
        "KIT_SCHEMA_REGISTRY_JAVA_HOME",  # ./dev test exports it
        "KIT_SCHEMA_REGISTRY_PORT",
        "KIT_SCHEMA_REGISTRY_URL",
        "KIT_KEEP_SCHEMA_REGISTRY",
        "KIT_APICURIO_VERSION",
        "JAVA_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jars, "JDK_ROOTS", (tmp_path / "jvm",))


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


def _jdk(home: Path, major: int, run: str = "exit 0") -> Path:
    """A fake JDK home whose bin/java reports Java ``major`` and otherwise runs ``run``."""
    version = f'openjdk version \\"{major}.0.3\\" 2026-04-21 LTS'
    body = f'if [ "$1" = "-version" ]; then echo "{version}" >&2; exit 0; fi\n{run}'
    _script(home / "bin", "java", body)
    return home


def _path_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, major: int | None) -> str:
    """Make PATH hold only a fake java of ``major`` (None: no java at all); return its path."""
    folder = tmp_path / "path-bin"
    folder.mkdir(exist_ok=True)
    (folder / "java").unlink(missing_ok=True)
    if major is not None:
        _jdk(tmp_path / "path-jdk", major)
        (folder / "java").symlink_to(tmp_path / "path-jdk" / "bin" / "java")
    monkeypatch.setenv("PATH", str(folder))
    return str(folder / "java")


def test_java_from_the_variable_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_java(tmp_path, monkeypatch, 25)
    monkeypatch.setenv("JAVA_HOME", str(_jdk(tmp_path / "jdk25", 25)))
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_JAVA_HOME", str(_jdk(tmp_path / "jdk21", 21)))
    java = registry.registry_java()
    assert (java.path, java.major) == (str(tmp_path / "jdk21" / "bin" / "java"), 21)
    assert java.describe() == f"{java.path} (Java 21, from KIT_SCHEMA_REGISTRY_JAVA_HOME)"


def test_java_variable_too_old_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_java(tmp_path, monkeypatch, 25)
    monkeypatch.setenv("JAVA_HOME", str(_jdk(tmp_path / "jdk25", 25)))
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_JAVA_HOME", str(_jdk(tmp_path / "jdk17", 17)))
    with pytest.raises(BrokerError) as caught:
        registry.registry_java()
    assert str(caught.value).startswith(
        f"Apicurio Registry 3.3.3 needs Java 21+; KIT_SCHEMA_REGISTRY_JAVA_HOME "
        f"({tmp_path / 'jdk17'}) is Java 17. Set KIT_SCHEMA_REGISTRY_JAVA_HOME to a JDK 21+"
    )
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_JAVA_HOME", str(tmp_path / "nothing"))
    with pytest.raises(BrokerError, match="nothing/bin/java does not exist or is not executable"):
        registry.registry_java()


def test_java_home_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _path_java(tmp_path, monkeypatch, 25)
    monkeypatch.setenv("JAVA_HOME", str(_jdk(tmp_path / "jdk21", 21)))
    assert registry.registry_java().source == "JAVA_HOME"
    monkeypatch.setenv("JAVA_HOME", str(_jdk(tmp_path / "jdk17", 17)))  # too old: next one
    java = registry.registry_java()
    assert (java.path, java.major, java.source) == (on_path, 25, "PATH")


def test_no_java_21_lists_the_candidates_and_the_jdks_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _path_java(tmp_path, monkeypatch, 17)
    _jdk(tmp_path / "jvm" / "jdk-17", 17)
    _jdk(tmp_path / "jvm" / "temurin-25", 25)
    (tmp_path / "jvm" / "default-java").symlink_to(tmp_path / "jvm" / "temurin-25")
    with pytest.raises(BrokerError) as caught:
        registry.registry_java()
    assert str(caught.value) == (
        f"Apicurio Registry 3.3.3 needs Java 21+; JAVA_HOME unset, java on PATH ({on_path}) is "
        f"Java 17. Set KIT_SCHEMA_REGISTRY_JAVA_HOME to a JDK 21+ (found here: "
        f"{tmp_path / 'jvm' / 'temurin-25'}, Java 25)"
    )
    _path_java(tmp_path, monkeypatch, None)
    monkeypatch.setattr(jars, "JDK_ROOTS", (tmp_path / "empty",))
    with pytest.raises(BrokerError) as caught:
        registry.registry_java()
    assert "JAVA_HOME unset, java not found on PATH. " in str(caught.value)
    assert str(caught.value).endswith(f"(none found in {tmp_path / 'empty'})")


def test_start_reports_no_java_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_java(tmp_path, monkeypatch, 17)
    with pytest.raises(BrokerError, match=r"needs Java 21\+"):
        registry.start(_free_port())
    assert not (tmp_path / "cache").exists()


def test_command_line(tmp_path: Path) -> None:
    command = registry.registry_command("/jdk/bin/java", Path("/app"), tmp_path, 18081, 19000)
    assert command[0] == "/jdk/bin/java"
    assert command[-2:] == ["-jar", "/app/quarkus-run.jar"]
    for flag in (
        "-Dquarkus.http.host=127.0.0.1",
        "-Dquarkus.http.port=18081",
        "-Dquarkus.management.host=127.0.0.1",
        "-Dquarkus.management.port=19000",
        "-Dapicurio.rules.global.compatibility=BACKWARD",
        f"-Dkit.schema-registry.dir={tmp_path}",
    ):
        assert flag in command, flag


def _fake_mvn(tmp_path: Path) -> Path:
    """A mvn that records its arguments and writes a tiny app archive where it is told."""
    calls = tmp_path / "mvn-calls"
    body = f"""
echo "$@" >> {calls}
sleep 0.3
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
done
src=$(mktemp -d) && mkdir -p "$src/lib" && echo jar > "$src/quarkus-run.jar"
mkdir -p "$out" && tar czf "$out/apicurio-registry-app-9.9.9-all.tar.gz" -C "$src" .
"""
    _script(tmp_path / "bin", "mvn", body)
    return calls


def test_ensure_app_runs_maven_once_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_mvn(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    results: list[Path] = []
    workers = [
        threading.Thread(target=lambda: results.append(registry.ensure_app("9.9.9")))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    lines = calls.read_text().splitlines()
    assert len(lines) == 1
    assert (
        "dependency:copy -Dartifact=io.apicurio:apicurio-registry-app:9.9.9:tar.gz:all"
        in (lines[0])
    )
    app = tmp_path / "cache" / "apicurio-9.9.9" / "app"
    assert results == [app] * 4
    assert (app / "quarkus-run.jar").is_file() and (app / "lib").is_dir()
    assert (app.parent / ".complete").is_file()
    assert not (app.parent / "download").exists()  # the archive is deleted once unpacked
    assert (app.parent / "pom.xml").read_text() == registry.POM_PATH.read_text()
    registry.ensure_app("9.9.9")
    assert len(calls.read_text().splitlines()) == 1  # cached


def test_ensure_app_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "bin", "mvn", "echo 'Could not find artifact io.apicurio' ; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(
        BrokerError, match=r"(?s)Apicurio Registry 0\.0\.1.*Could not find artifact"
    ):
        registry.ensure_app("0.0.1")
    assert not (tmp_path / "cache" / "apicurio-0.0.1" / ".complete").exists()
    (tmp_path / "bin" / "mvn").unlink()
    with pytest.raises(BrokerError, match=r"^mvn not found on PATH: kit's local schema registry"):
        registry.ensure_app("0.0.1")


def test_unpack_refuses_paths_outside_the_app_without_tar_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python before 3.11.4 (no tarfile.data_filter) members leaving the folder are refused."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "quarkus-run.jar").write_text("jar")
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(tmp_path / "src", ".")
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(tmp_path / "src" / "quarkus-run.jar", "../escaped.jar")
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    registry._unpack(good, tmp_path / "app")
    assert (tmp_path / "app" / "quarkus-run.jar").read_text() == "jar"
    with pytest.raises(BrokerError, match=r"unsafe path: \.\./escaped\.jar"):
        registry._unpack(bad, tmp_path / "app2")
    assert not (tmp_path / "escaped.jar").exists()


def _installed_app(version: str = "3.3.3") -> None:
    app = registry.app_dir(version)
    app.mkdir(parents=True)
    (app / "quarkus-run.jar").write_text("jar")
    (app.parent / ".complete").write_text(f"{version}\n")


def test_jvm_exit_while_starting_shows_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed_app()
    run = "echo 'ERROR Port 18081 seems to be in use by another process.'; exit 1"
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_JAVA_HOME", str(_jdk(tmp_path / "jdk", 25, run)))
    with pytest.raises(BrokerError) as caught:
        registry.start(_free_port(), timeout=20)
    assert str(caught.value).startswith("the schema registry exited with code 1 while starting")
    assert "Port 18081 seems to be in use" in str(caught.value)
    data_dir = tmp_path / "registry"
    assert not (data_dir / "registry.pid").exists() and not (data_dir / "state.json").exists()


def _fake_jvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed app and a JDK whose java runs the fake registry."""
    _installed_app()
    server = tmp_path / "fake_registry.py"
    server.write_text(_FAKE_REGISTRY)
    run = f'exec {sys.executable} {server} "$@"'
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_JAVA_HOME", str(_jdk(tmp_path / "jdk", 25, run)))


def test_start_status_stop_with_a_fake_jvm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_jvm(tmp_path, monkeypatch)
    port = _free_port()
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_PORT", str(port))
    try:
        assert registry_cli("start") == 0
        out = capsys.readouterr().out
        url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
        assert out.startswith(f"apicurio registry 3.3.3 ready at {url} (pid ")
        java = tmp_path / "jdk" / "bin" / "java"
        assert f"  java: {java} (Java 25, from KIT_SCHEMA_REGISTRY_JAVA_HOME)\n" in out
        assert out.endswith(f"  export KIT_SCHEMA_REGISTRY_URL={url}\n")
        info = registry.status()
        assert info is not None and info.url == url and info.java.major == 25
        again = registry.start()  # already running: the same one, not launched by this call
        assert (again.pid, again.launched) == (info.pid, False)
        assert registry_cli("start", "--port", str(_free_port())) == 2
        assert "already runs at" in capsys.readouterr().err
        assert registry_cli("status") == 0
        assert capsys.readouterr().out.startswith(f"running at {url} (pid {info.pid}, ")
    finally:
        assert registry_cli("stop") == 0
    assert capsys.readouterr().out == "stopped\n"
    assert registry.status() is None
    assert not (tmp_path / "registry" / "registry.pid").exists()


def test_our_slow_registry_is_not_taken_for_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry launched from this data dir that answers slower than status()'s 3 s probe
    is waited for by start(), not reported as a stranger on its port, and the test fixture,
    which did not launch it, does not stop it."""
    _fake_jvm(tmp_path, monkeypatch)
    port = _free_port()
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_PORT", str(port))
    try:
        first = registry.start(timeout=20)
        assert first.launched
        answers = registry._answers
        slow = lambda url, timeout: timeout > 3.0 and answers(url, timeout)  # noqa: E731
        monkeypatch.setattr(registry, "_answers", slow)
        assert registry.status() is None  # the quick probe gives up
        again = registry.start(timeout=20)
        assert (again.pid, again.launched) == (first.pid, False)
        testing_registry.resolve_schema_registry().close()
        assert registry.status(wait=10) == again  # still running
    finally:
        assert registry.stop() is True


def test_stale_files_are_cleaned_and_foreign_pids_left_alone() -> None:
    data_dir = registry.registry_dir()
    data_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / "registry.pid").write_text(f"{dead.pid}\n")
    (data_dir / "state.json").write_text("{}")
    assert registry.status() is None
    assert not (data_dir / "registry.pid").exists()
    assert not (data_dir / "state.json").exists()
    (data_dir / "registry.pid").write_text(f"{os.getpid()}\n")  # alive, but not a registry
    assert registry.stop() is False  # and it did not signal us
    assert not (data_dir / "registry.pid").exists()


def test_cli_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry_cli("status") == 1
    assert capsys.readouterr().out == "not running\n"
    assert registry_cli("stop") == 0
    assert capsys.readouterr().out == "not running\n"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert registry_cli("start", "--port", str(port)) == 2
    assert capsys.readouterr().err == (
        f"kit schema-registry: port {port} is taken by another process; "
        "set KIT_SCHEMA_REGISTRY_PORT or pass --port\n"
    )
    _path_java(tmp_path, monkeypatch, 17)
    assert registry_cli("start", "--port", str(_free_port())) == 2
    assert capsys.readouterr().err.startswith(
        "kit schema-registry: Apicurio Registry 3.3.3 needs Java 21+; JAVA_HOME unset"
    )
    assert registry_cli("start", "--port", "0") == 2
    assert registry_cli("frobnicate") == 2


def test_resolve_for_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_URL", "http://registry:8081")
    resolved = testing_registry.resolve_schema_registry()
    assert (resolved.url, resolved.source) == ("http://registry:8081", "env")
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_URL", "mock://x")
    with pytest.raises(ConfigError, match="need a real registry"):
        testing_registry.resolve_schema_registry()
    monkeypatch.delenv("KIT_SCHEMA_REGISTRY_URL")

    info = registry.RegistryInfo(
        "http://127.0.0.1:1/apis/ccompat/v7",
        1,
        1,
        2,
        "3.3.3",
        jars.Java("java", 25, "PATH"),
        tmp_path,
    )
    stopped: list[bool] = []
    monkeypatch.setattr(registry, "stop", lambda: stopped.append(True) or True)
    monkeypatch.setattr(registry, "status", lambda: info)  # already running: never stopped
    testing_registry.resolve_schema_registry().close()
    assert stopped == []
    monkeypatch.setattr(registry, "status", lambda: None)
    monkeypatch.setattr(registry, "start", lambda: info)  # another process launched it first
    testing_registry.resolve_schema_registry().close()
    assert stopped == []
    launched = dataclasses.replace(info, launched=True)  # started here: closing stops it
    monkeypatch.setattr(registry, "start", lambda: launched)
    resolved = testing_registry.resolve_schema_registry()
    assert (resolved.url, resolved.source) == (info.url, "local")
    resolved.close()
    assert stopped == [True]
    monkeypatch.setenv("KIT_KEEP_SCHEMA_REGISTRY", "1")
    testing_registry.resolve_schema_registry().close()
    assert stopped == [True]


def test_fixture_fails_rather_than_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a JDK 21+ a test using kit_schema_registry errors, saying how to deselect it."""
    _path_java(tmp_path, monkeypatch, 17)
    monkeypatch.setenv("KIT_SCHEMA_REGISTRY_PORT", str(_free_port()))  # 8081 may be in use
    test = tmp_path / "test_uses_registry.py"
    test.write_text("def test_it(kit_schema_registry):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", "-rE"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "needs Java 21+" in done.stdout
    assert "deselect with -m 'not schema_registry'" in done.stdout
