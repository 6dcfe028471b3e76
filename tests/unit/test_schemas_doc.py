"""docs/schemas.md names only what exists: every KIT_* setting is one kit reads, and every
`kit ...` command it shows runs with --help and has the options written after it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kit.cli import main as kit_main
from kit.config import known_variables

DOC = Path(__file__).resolve().parents[2] / "docs" / "schemas.md"
TEXT = DOC.read_text(encoding="utf-8")


def settings_named(text: str) -> set[str]:
    """Every KIT_* name in `text` (not a prefix such as KIT_KAFKA_ ending in _)."""
    return {name for name in re.findall(r"\bKIT_[A-Z0-9_]*[A-Z0-9]\b", text)}


def commands_shown(text: str) -> dict[tuple[str, ...], set[str]]:
    """Each `kit ...` command of a code span or a code block line: its command words, and
    the long options written after it."""
    spans = re.findall(r"`(kit [^`\n]+)`", text)
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    shown = spans + [line.strip() for line in lines if line.strip().startswith("kit ")]
    found: dict[tuple[str, ...], set[str]] = {}
    for command in shown:
        words = command.split("#")[0].split()[1:]
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        found.setdefault(tuple(path), set()).update(
            re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command.split("#")[0])
        )
    return found


def test_the_parsers_find_what_the_doc_shows() -> None:
    assert "KIT_SCHEMA_REGISTRY_URL" in settings_named(TEXT)
    commands = commands_shown(TEXT)
    assert commands[("schemas", "check")] >= {"--against", "--subject-strategy"}
    assert {("schema-registry", "start"), ("schema-registry", "stop")} <= set(commands)
    assert settings_named("KIT_KAFKA_ and KIT_X_Y") == {"KIT_X_Y"}


def test_every_setting_the_doc_names_is_read_by_kit() -> None:
    unknown = settings_named(TEXT) - known_variables()
    assert not unknown, f"docs/schemas.md names settings kit does not read: {sorted(unknown)}"


@pytest.mark.parametrize("command", sorted(commands_shown(TEXT)), ids=" ".join)
def test_every_command_the_doc_shows_exists_with_its_options(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert command, "a `kit` command with no subcommand"
    assert kit_main([*command, "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"Usage: kit {' '.join(command)}"), help_text[:200]
    missing = {o for o in commands_shown(TEXT)[command] if o not in help_text}
    assert not missing, f"kit {' '.join(command)} has no {sorted(missing)}"
