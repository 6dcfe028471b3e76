"""One mapping from error type to exit code (kit.cli.errors): one test per row of it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from kit.cli import cli, main
from kit.cli.errors import EXIT_CODES, Exit, InvalidInput, UnreadableReply, guarded
from kit.errors import (
    BrokerError,
    ConfigError,
    DeliveryError,
    KitError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def command_raising() -> Iterator[Callable[..., None]]:
    """Add `kit boom` to the real `kit` group; it raises what the test says."""
    added: list[str] = []

    def add(error: BaseException, *, answers: bool = False, bare: bool = False) -> None:
        def boom() -> int:
            raise error

        cli.add_command(
            click.Command("boom", callback=guarded("kit boom", answers=answers, bare=bare)(boom))
        )
        added.append("boom")

    yield add
    for name in added:
        cli.commands.pop(name, None)


TIMEOUT_LINE = "request inv.check timed out after 1.500s (correlation id c-1)"
ROWS = [
    (ConfigError("KIT_X", "bad"), 2, "kit boom: configuration error: KIT_X: bad"),
    (InvalidInput("--json is not JSON"), 2, "kit boom: --json is not JSON"),
    (RequestTimeout("inv", "check", "c-1", 1.5), 3, f"kit boom: {TIMEOUT_LINE}"),
    (
        RemoteError("inv", "check", "KeyError", "'x'"),
        4,
        "kit boom: remote error: inv.check raised KeyError: 'x'",
    ),
    (UnreadableReply("cannot decode the reply"), 4, "kit boom: cannot decode the reply"),
    (ServiceUnavailable("inv"), 5, "kit boom: no live instance of service 'inv' is registered"),
    (DeliveryError("not confirmed"), 1, "kit boom: DeliveryError: not confirmed"),
    (KitError("went wrong"), 1, "kit boom: KitError: went wrong"),
    (KeyboardInterrupt(), 130, "kit boom: interrupted"),
]


@pytest.mark.parametrize(("error", "code", "line"), ROWS, ids=lambda v: type(v).__name__)
def test_a_command_raising_it_exits_with_its_code(
    command_raising: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
    line: str,
) -> None:
    command_raising(error)
    assert main(["boom"]) == code
    assert capsys.readouterr().err == line + "\n"


def test_every_row_is_tested() -> None:
    tested = {type(error) for error, _code, _line in ROWS}
    assert {row.error for row in EXIT_CODES} <= tested
    for error, code, _line in ROWS:
        row = next(r for r in EXIT_CODES if isinstance(error, r.error))
        assert row.code == code


def test_a_command_whose_1_is_an_answer_exits_2_when_it_fails(
    command_raising: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    command_raising(BrokerError("port 9092 is taken"), answers=True, bare=True)
    assert main(["boom"]) == 2
    assert capsys.readouterr().err == "kit boom: port 9092 is taken\n"


def test_a_command_whose_1_is_an_answer_keeps_the_other_codes(
    command_raising: Callable[..., None],
) -> None:
    command_raising(ServiceUnavailable("inv"), answers=True)
    assert main(["boom"]) == 5


def test_any_other_exception_is_a_bug_and_keeps_its_traceback(
    command_raising: Callable[..., None],
) -> None:
    command_raising(ZeroDivisionError("oops"))
    with pytest.raises(ZeroDivisionError):
        main(["boom"])


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["run"],
        ["replay", "f", "--speed", "0"],
        ["broker", "start", "--brokers", "2"],
    ],
)
def test_wrong_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == Exit.USAGE
    assert "Usage: kit" in capsys.readouterr().err


def test_kit_request_with_bad_json_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["request", "inv", "check", "--json", "{not json"]) == 2
    assert capsys.readouterr().err.startswith("kit request: --json is not valid JSON: ")


def test_broker_status_not_running_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KIT_BROKER_DIR", str(tmp_path))
    assert main(["broker", "status"]) == 1
    assert capsys.readouterr().out == "not running\n"


def test_shadow_of_a_missing_recording_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.kitrec"
    assert main(["replay", "--shadow", "tests.fixtures.billing:service", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"kit replay --shadow: {missing}")


def test_the_readme_table_is_this_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Commands and exit codes") :]
    section = section[: section.index("\n## ", 1)]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(code) for code in Exit}
    for row in EXIT_CODES:
        name = row.error.__name__
        if name not in ("InvalidInput", "UnreadableReply", "KeyboardInterrupt", "KitError"):
            line = next(x for x in section.splitlines() if f"`{name}`" in x)
            assert line.startswith(f"| {int(row.code)} |"), line
