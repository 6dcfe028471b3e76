"""Global options of the `kit` command work before any subcommand (issue 10, point 4)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.delenv("KIT_LOG_LEVEL", raising=False)
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_log_level_before_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bad setting stops `kit services` before it needs a broker: the command ran.
    monkeypatch.setenv("KIT_RETRIES", "-1")
    assert main(["--log-level", "DEBUG", "services"]) == 2
    assert "configuration error: KIT_RETRIES" in capsys.readouterr().err
    assert logging.getLogger().level == logging.DEBUG


def test_log_level_before_broker_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "DEBUG", "broker", "status"]) == 1
    assert capsys.readouterr().out == "not running\n"
    assert logging.getLogger().level == logging.DEBUG
