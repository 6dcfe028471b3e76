"""docs/operations.md names only what exists: its KIT_* settings are read by kit (or are
librdkafka settings kit passes through), its `kit_*` metrics are the ones /metrics serves
(and every one served is documented), and each `kit ...` command it shows has that
subcommand and those options. The README's settings table and its Operating section are
held to the same."""

from __future__ import annotations

import re
from pathlib import Path

import confluent_kafka
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kit.cli import main as kit_main
from kit.config import Settings, client_config, known_variables
from kit.metrics import KitCollector

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = README[README.index("## Configuration") :]
SETTINGS_TABLE = CONFIGURATION[CONFIGURATION.index("| variable |") :].split("\n\n", 1)[0]
OPERATING = README[README.index("## Operating") :].split("\n## ", 1)[0]

Command = tuple[tuple[str, ...], frozenset[str], frozenset[str]]
"""(subcommand words, global options before them, long options after them)."""


def settings_named(text: str) -> set[str]:
    """Every KIT_* name in `text` (not a prefix such as KIT_KAFKA_ ending in _)."""
    return set(re.findall(r"\bKIT_[A-Z0-9_]*[A-Z0-9]\b", text))


def metrics_named(text: str) -> set[str]:
    """Every `kit_...` metric name in `text` (not `_kit_registry` and the like)."""
    return set(re.findall(r"(?<![\w.])kit_[a-z_]*[a-z]\b", text))


def served_metrics() -> dict[str, str]:
    """The metric families /metrics serves (name as exposed → type), read from
    KitCollector's exposition with no runtime attached."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KitCollector(lambda: []))
    text = generate_latest(registry).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))


def sample_names(families: dict[str, str]) -> set[str]:
    """The names PromQL may use: each family, and a histogram's _bucket, _sum, _count."""
    names = set(families)
    for name, kind in families.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def commands_shown(text: str) -> set[Command]:
    """Each `kit ...` command of a code span, or of a code block line (`$ ` prompt allowed)."""
    spans = re.findall(r"`(kit [^`\n]+)`", text)
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = [line.strip().removeprefix("$ ") for block in blocks for line in block.splitlines()]
    shown: set[Command] = set()
    for command in spans + [line for line in lines if line.startswith("kit ")]:
        words = command.split("#")[0].split()[1:]
        options = set()
        while words and words[0].startswith("--"):  # global options, each with its value
            option = words.pop(0)
            options.add(option.split("=")[0])
            if "=" not in option and words:
                words.pop(0)
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        rest = " ".join(words)
        after = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)
        shown.add((tuple(path), frozenset(options), frozenset(after)))
    return shown


def test_the_parsers_find_what_the_doc_shows() -> None:
    assert {"KIT_METRICS_PORT", "KIT_HEALTH_STUCK_AFTER"} <= settings_named(DOC)
    assert {"kit_consumer_lag", "kit_handler_duration_seconds_bucket"} <= metrics_named(DOC)
    assert metrics_named("_kit_registry kit_main kit.kit_x kit_up") == {"kit_main", "kit_up"}
    commands = {(path, after) for path, _, after in commands_shown(DOC)}
    assert (("services",), frozenset({"--stats"})) in commands
    assert (("catalog",), frozenset({"--from", "--asyncapi"})) in commands
    run = commands_shown("`kit --log-format json run ...`")
    assert run == {(("run",), frozenset({"--log-format"}), frozenset())}
    assert "KIT_METRICS_PORT" in settings_named(SETTINGS_TABLE)


@pytest.mark.parametrize("source", ["docs/operations.md", "README.md settings table"])
def test_every_setting_named_is_read_by_kit_or_librdkafka(source: str) -> None:
    text = DOC if source.startswith("docs") else SETTINGS_TABLE
    named = settings_named(text)
    passed_through = {n for n in named - known_variables() if n.startswith("KIT_KAFKA_")}
    assert named - known_variables() - passed_through == set(), source
    librdkafka = client_config(Settings(), {name: "1" for name in passed_through})
    for name, value in librdkafka.items():
        try:
            confluent_kafka.Producer({name: value})
        except confluent_kafka.KafkaException as exc:  # "1" may be a bad value: not a bad name
            assert "No such configuration property" not in str(exc), f"{source}: {exc}"


def test_every_metric_named_is_served_and_every_one_served_is_documented() -> None:
    served = served_metrics()
    assert len(served) == 10, served
    for text in (DOC, OPERATING):
        unknown = metrics_named(text) - sample_names(served)
        assert not unknown, f"metrics /metrics does not serve: {sorted(unknown)}"
    table = {m for m in re.findall(r"^\| `(kit_[a-z_]+)` \|", DOC, flags=re.M)}
    assert table == set(served)
    for name, kind in served.items():
        row = next(line for line in DOC.splitlines() if line.startswith(f"| `{name}` |"))
        assert row.split("|")[2].strip() == kind, row


@pytest.mark.parametrize(
    "command",
    sorted(commands_shown(DOC)),
    ids=lambda c: " ".join((*sorted(c[1]), *c[0], *sorted(c[2]))),
)
def test_every_command_shown_exists_with_its_options(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    path, global_options, options = command
    assert path, "a `kit` command with no subcommand"
    if global_options:
        assert kit_main(["--help"]) == 0
        top = capsys.readouterr().out
        assert {o for o in global_options if o not in top} == set()
    assert kit_main([*path, "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"Usage: kit {' '.join(path)}"), help_text[:200]
    missing = {o for o in options if o not in help_text}
    assert not missing, f"kit {' '.join(path)} has no {sorted(missing)}"
