"""`kit schemas check FILE` or SUBFOLDER, and `kit schemas check` run from inside a project."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kit.cli import main as kit_main
from tests.unit.schema_files import record, write


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KIT_SCHEMAS_DIR", raising=False)
    schemas = tmp_path / "proj" / "schemas"
    write(schemas, "v/Kind", {"type": "enum", "name": "Kind", "namespace": "v", "symbols": ["A"]})
    write(schemas, "v/Uses", record("Uses", [{"name": "kind", "type": "v.Kind"}]))
    write(schemas, "w/Other", record("Other", [{"name": "kind", "type": "v.Kind"}], "w"))
    (tmp_path / "proj" / "app" / "deep").mkdir(parents=True)
    return tmp_path / "proj"


def test_check_one_file_resolves_references_in_its_schemas_folder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Uses.avsc")]) == 0
    out = capsys.readouterr().out
    assert "v.Uses" in out and "v.Kind" not in out


def test_check_one_file_reports_only_its_problems(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        project / "schemas",
        "v/Bad",
        record("Bad", [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]),
    )
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Uses.avsc")]) == 0
    capsys.readouterr()
    assert kit_main(["schemas", "check", str(project / "schemas" / "v" / "Bad.avsc")]) == 1
    assert "Bad.avsc: $.fields[1].name: duplicate field name 'a'" in capsys.readouterr().out


def test_check_a_file_outside_any_schemas_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "loose", "One", record("One", [{"name": "a", "type": "int"}]))
    assert kit_main(["schemas", "check", str(path)]) == 0
    assert "v.One" in capsys.readouterr().out


def test_check_from_a_subfolder_finds_the_nearest_schemas(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project / "app" / "deep")
    assert kit_main(["schemas", "check"]) == 0
    out = capsys.readouterr().out
    assert "v.Uses" in out and "v.Kind" in out
    assert str(project / "schemas") in out


def test_check_a_subfolder_of_a_schemas_folder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit_main(["schemas", "check", str(project / "schemas" / "w")]) == 0
    out = capsys.readouterr().out
    assert "w.Other" in out and "v.Kind" not in out and "1 schema(s)" in out


# `kit schemas check --against URL`, over a mock:// registry. confluent-kafka's mock
# registry has no compatibility rules (its get_compatibility and test_compatibility would
# do real HTTP), so a test sets the rule and the registry's verdict itself: the verdict is
# the registry's, whatever kit's own comparison finds.

USES_V1 = record("Uses", [{"name": "a", "type": "int"}])
USES_V2 = record("Uses", [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}])


class Verdicts:
    """The registry side of a mock:// client: a rule, and each subject's verdict."""

    def __init__(self, rule: str, compatible: dict[str, bool]) -> None:
        self.rule = rule
        self.compatible = compatible
        self.asked: list[tuple[str, str]] = []

    def install(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        def verdict(kind: str) -> Any:  # Any: a stand-in for a client method
            def answer(subject_name: str, _schema: object, *_a: object, **_k: object) -> bool:
                self.asked.append((kind, subject_name))
                return self.compatible[subject_name]

            return answer

        monkeypatch.setattr(client, "get_compatibility", lambda subject_name=None: self.rule)
        monkeypatch.setattr(client, "test_compatibility", verdict("latest"))
        monkeypatch.setattr(client, "test_compatibility_all_versions", verdict("all"))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A mock:// registry's URL and the client `kit schemas check --against` will use."""
    from kit.config import load_settings
    from kit.transport.registry_format import forget_client, registry_client

    for name in list(os.environ):
        if name.startswith("KIT_SCHEMA_REGISTRY_"):
            monkeypatch.delenv(name)
    url = f"mock://check-{uuid.uuid4().hex[:8]}"
    yield url, registry_client(load_settings(None, schema_registry_url=url))
    forget_client(url)


def registered(client: Any, subject: str, schema: dict[str, object]) -> None:
    from confluent_kafka.schema_registry import Schema as RegistrySchema

    client.register_schema(subject, RegistrySchema(json.dumps(schema), "AVRO"))


def against(
    capsys: pytest.CaptureFixture[str], path: Path, url: str, *more: str
) -> tuple[int, list[str]]:
    code = kit_main(["schemas", "check", str(path), "--against", url, *more])
    out = capsys.readouterr()
    return code, (out.out + out.err).splitlines()


def test_against_reports_a_refusal_with_subject_rule_and_incompatibility(
    tmp_path: Path,
    registry: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, client = registry
    registered(client, "v.Uses-value", USES_V1)
    Verdicts("BACKWARD", {"v.Uses-value": False}).install(client, monkeypatch)
    path = write(tmp_path / "schemas", "v/Uses", USES_V2)
    code, lines = against(capsys, path, url)
    assert code == 1
    (line,) = [x for x in lines if x.startswith("refused:")]
    assert line.startswith("refused: v.Uses -> v.Uses-value (BACKWARD): cannot read version 1")
    assert "/fields/1" in line and "b" in line
    assert lines[-1].endswith("0 compatible, 0 new subject(s), 1 refused")


def test_against_the_registrys_verdict_decides(
    tmp_path: Path,
    registry: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, client = registry
    registered(client, "v.Uses-value", USES_V1)
    path = write(tmp_path / "schemas", "v/Uses", USES_V2)  # kit finds a missing default
    Verdicts("BACKWARD", {"v.Uses-value": True}).install(client, monkeypatch)
    code, lines = against(capsys, path, url)
    assert code == 0
    assert (
        "ok:      v.Uses -> v.Uses-value (BACKWARD): compatible with the latest version"
        in (lines[0])
    )
    write(tmp_path / "schemas", "v/Uses", USES_V1)  # kit finds nothing wrong
    Verdicts("BACKWARD", {"v.Uses-value": False}).install(client, monkeypatch)
    code, lines = against(capsys, path, url)
    assert code == 1
    assert lines[0].endswith(
        "the registry finds it incompatible with the latest version; kit finds no incompatibility"
    )


def test_against_a_new_subject_and_the_record_strategy(
    tmp_path: Path,
    registry: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, client = registry
    registered(client, "v.Uses", USES_V1)
    verdicts = Verdicts("FULL_TRANSITIVE", {"v.Uses": True})
    verdicts.install(client, monkeypatch)
    write(
        tmp_path / "schemas",
        "v/Kind",
        {"type": "enum", "name": "Kind", "namespace": "v", "symbols": ["A"]},
    )
    write(tmp_path / "schemas", "v/Uses", USES_V1)
    write(tmp_path / "schemas", "w/Fresh", record("Fresh", [{"name": "k", "type": "v.Kind"}], "w"))
    code, lines = against(capsys, tmp_path / "schemas", url, "--subject-strategy", "record")
    assert code == 0
    assert lines[:2] == [
        "ok:      v.Uses -> v.Uses (FULL_TRANSITIVE): compatible with every version (1 registered)",
        "new:     w.Fresh -> w.Fresh (FULL_TRANSITIVE): no version yet; registering creates the "
        "subject",
    ]
    assert verdicts.asked == [("all", "v.Uses")]  # a transitive rule: every version
    assert not any("v.Kind" in x for x in lines)  # an enum is no event: not checked


def test_against_a_rule_of_none_accepts_anything(
    tmp_path: Path,
    registry: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, client = registry
    registered(client, "v.Uses-value", USES_V1)
    verdicts = Verdicts("NONE", {"v.Uses-value": False})
    verdicts.install(client, monkeypatch)
    code, lines = against(capsys, write(tmp_path / "schemas", "v/Uses", USES_V2), url)
    assert (code, lines[0]) == (0, "ok:      v.Uses -> v.Uses-value (NONE): any schema is accepted")
    assert verdicts.asked == []


def test_against_an_unreachable_registry_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KIT_CONNECT_TIMEOUT", "2")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    path = write(tmp_path / "schemas", "v/Uses", USES_V1)
    code, lines = against(capsys, path, f"http://127.0.0.1:{port}")
    assert code == 2
    assert any("KIT_SCHEMA_REGISTRY_URL" in x and "unreachable" in x for x in lines), lines
