"""The `kit` command as a whole: version, help without the commands' imports, completion,
argparse-style options, and where the CLI may be imported from."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kit
from kit.cli import main
from kit.errors import KitError

ROOT = Path(__file__).resolve().parents[2]


def kit_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"kit {kit.__version__}\n"


def test_python_m_kit_cli_runs_the_command() -> None:
    done = kit_process("--version")
    assert (done.returncode, done.stdout) == (0, f"kit {kit.__version__}\n"), done.stderr


def test_help_loads_no_command_dependency() -> None:
    code = (
        "import sys, kit; before = set(sys.modules); from kit.cli import main; "
        "assert main(['--help']) == 0; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('click')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = eval(done.stdout.splitlines()[-1])
    assert all(name == "kit.cli" or name.startswith("kit.cli.") for name in loaded), loaded


def test_shell_completion_comes_from_click() -> None:
    done = kit_process(
        env={"_KIT_COMPLETE": "bash_complete", "COMP_WORDS": "kit bro", "COMP_CWORD": "1"}
    )
    assert done.stdout.splitlines() == ["plain,broker"], done.stderr
    done = kit_process(
        env={"_KIT_COMPLETE": "bash_complete", "COMP_WORDS": "kit broker st", "COMP_CWORD": "2"}
    )
    assert done.stdout.splitlines() == ["plain,start", "plain,status", "plain,stop"]


def test_kit_log_level_applies_to_every_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_logging: None
) -> None:
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path))
    monkeypatch.setenv("KIT_LOG_LEVEL", "error")
    assert main(["broker", "status"]) == 1
    assert logging.getLogger().level == logging.ERROR
    assert main(["--log-level", "debug", "broker", "status"]) == 1
    assert logging.getLogger().level == logging.DEBUG


def test_services_keeps_its_own_log_level_option(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("KIT_RETRIES", "-1")  # stops before it needs a broker
    monkeypatch.delenv("KIT_LOG_LEVEL", raising=False)
    assert main(["services"]) == 2
    assert logging.getLogger().level == logging.WARNING  # its default
    assert main(["--log-level", "INFO", "services", "--log-level", "ERROR"]) == 2
    assert logging.getLogger().level == logging.ERROR  # the command's own option wins


def test_a_bad_log_level_is_wrong_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "LOUD", "broker", "status"])
    assert exited.value.code == 2
    assert "'LOUD' is not a log level" in capsys.readouterr().err


@pytest.fixture
def replayed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `kit replay` passed to kit.replay.replay.replay or kit.replay.shadow.shadow."""
    from kit.replay.shadow import ShadowReport

    replay_module = importlib.import_module("kit.replay.replay")  # kit.replay.replay: a function

    calls: dict[str, Any] = {}

    def replay(path: str, **kwargs: Any) -> Any:
        calls["replay"] = (path, kwargs)
        raise KitError("stop here")

    async def shadow(services: Any, path: str, **kwargs: Any) -> ShadowReport:
        calls["shadow"] = ([s.name for s in services], path, kwargs)
        return ShadowReport(0, 0, 0)

    monkeypatch.setattr(replay_module, "replay", replay)
    monkeypatch.setattr(importlib.import_module("kit.replay.shadow"), "shadow", shadow)
    return calls


def test_replay_options_take_several_values_as_before(replayed: dict[str, Any]) -> None:
    argv = ["replay", "f.kitrec", "--topic-map", "a=b", "c=d", "--speed", "2x", "-q"]
    assert main(argv) == 1
    path, kwargs = replayed["replay"]
    assert path == "f.kitrec"
    assert kwargs["topic_map"] == {"a": "b", "c": "d"} and kwargs["speed"] == 2.0
    assert main(["replay", "f.kitrec", "--topic-map", "a=b", "--topic-map", "e=f"]) == 1
    assert replayed["replay"][1]["topic_map"] == {"a": "b", "e": "f"}


def test_shadow_inputs_and_outputs(replayed: dict[str, Any]) -> None:
    target = "tests.fixtures.billing:service"
    argv = ["replay", "--shadow", target, "f.kitrec", "--inputs", "a", "b"]
    assert main([*argv, "--outputs"]) == 0
    expected = {"inputs": ["a", "b"], "outputs": [], "ignore": []}
    assert replayed["shadow"] == (["billing"], "f.kitrec", expected)
    assert main(argv[:4]) == 0
    assert replayed["shadow"][2] == {"inputs": None, "outputs": None, "ignore": []}


def test_broker_choices_follow_the_cluster_size() -> None:
    from kit.broker.cluster import CLUSTER_SIZE
    from kit.cli import broker

    assert broker._CLUSTER_SIZE == CLUSTER_SIZE


def _imports_of_kit_cli(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        if any(n == "kit.cli" or n.startswith("kit.cli.") for n in names):
            return True
    return False


def test_only_the_deprecated_shims_import_the_cli_from_below() -> None:
    """kit.cli sits on top; the old `cli_*(argv)` functions are the only imports of it
    from below, until their last callers call kit.cli.main."""
    package = ROOT / "kit"
    importers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "cli" not in path.relative_to(package).parts[:1] and _imports_of_kit_cli(path)
    }
    assert importers == set(), importers
