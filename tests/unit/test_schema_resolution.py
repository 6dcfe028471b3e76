"""One schema-resolution rule (kit.schema.repository_for), and every caller agrees on it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from kit.client import Client
from kit.config import load_settings
from kit.runtime import Runtime
from kit.schema import SchemaRepository, default_repository, repository_for
from kit.testing.harness import Harness

NAME = "res.Thing"


def write_schema(folder: Path, namespace: str = "res") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema = {
        "type": "record",
        "name": "Thing",
        "namespace": namespace,
        "fields": [{"name": "n", "type": "int"}],
    }
    (folder / "Thing.avsc").write_text(json.dumps(schema))
    return folder


MODULE = """
from kit import Event, Service

class Thing(Event, schema="res.Thing"):
    n: int

service = Service("res-{tag}")

@service.handler("things")
async def on_thing(thing: Thing) -> None:
    pass
"""


def load_module(path: Path, tag: str) -> ModuleType:
    """Import a module file that defines an Event bound by the default rule, and a Service."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MODULE.format(tag=tag))
    name = f"_kit_resolution_{tag}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.fixture(autouse=True)
def no_env_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIT_SCHEMAS_DIR", raising=False)


def test_an_explicit_folder_wins_over_the_nearest_schemas(tmp_path: Path) -> None:
    write_schema(tmp_path / "proj" / "schemas")
    explicit = write_schema(tmp_path / "elsewhere")
    repo = repository_for(tmp_path / "proj" / "app.py", explicit)
    assert repo.root == explicit
    assert repo is repository_for(schemas_dir=str(explicit))  # one repository per folder


def test_settings_schemas_dir_wins_and_is_read_through_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_schema(tmp_path / "proj" / "schemas")
    configured = write_schema(tmp_path / "configured")
    settings = load_settings(schemas_dir=str(configured))
    assert repository_for(tmp_path / "proj", settings=settings).root == configured
    monkeypatch.setenv("KIT_SCHEMAS_DIR", str(configured))
    assert repository_for(tmp_path / "proj").root == configured
    assert default_repository(tmp_path / "proj").root == configured


def test_the_nearest_schemas_folder_above_a_module_file(tmp_path: Path) -> None:
    outer = write_schema(tmp_path / "schemas")
    inner = write_schema(tmp_path / "pkg" / "schemas")
    module_file = tmp_path / "pkg" / "sub" / "mod.py"
    module_file.parent.mkdir(parents=True)
    module_file.write_text("")
    assert repository_for(module_file).root == inner
    assert repository_for(tmp_path / "other.py").root == outer
    assert repository_for(module_file) is repository_for(inner.parent)
    assert NAME in repository_for(module_file)


def test_the_current_directory_is_the_fallback_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = write_schema(tmp_path / "schemas")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    assert repository_for().root == found
    assert default_repository() is repository_for()


def test_without_any_schemas_folder_it_is_the_cwd_schemas_which_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    repo = repository_for(tmp_path / "x.py")
    assert repo.root == tmp_path / "schemas"
    assert [p.message for p in repo.problems] == ["schema folder does not exist"]


def test_every_caller_agrees_on_the_repository_of_a_module(tmp_path: Path) -> None:
    write_schema(tmp_path / "proj" / "schemas")
    module = load_module(tmp_path / "proj" / "svc" / "app.py", "agree")
    expected = repository_for(tmp_path / "proj" / "svc" / "app.py")
    settings = load_settings(bootstrap_servers="memory")

    assert module.Thing.__kit_repository__ is expected  # event binding
    assert module.Thing.kit_schema() is expected.get(NAME)
    assert Runtime(module.service, settings, extensions=[]).repository is expected  # runtime
    assert Harness(module.service, settings=settings).repository is expected  # harness
    client = Client.__new__(Client)  # the fallback alone: no producer, no broker
    client.repository = None
    client.settings = settings
    assert client._local_repository(module.Thing) is expected  # client


def test_every_caller_agrees_when_a_folder_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_schema(tmp_path / "proj" / "schemas")
    configured = write_schema(tmp_path / "configured")
    monkeypatch.setenv("KIT_SCHEMAS_DIR", str(configured))
    module = load_module(tmp_path / "proj" / "svc" / "app.py", "configured")
    settings = load_settings(bootstrap_servers="memory")
    expected = repository_for(schemas_dir=configured)

    assert module.Thing.__kit_repository__ is expected
    assert Runtime(module.service, settings, extensions=[]).repository is expected
    assert Harness(module.service, settings=settings).repository is expected
    client = Client.__new__(Client)
    client.repository = None
    client.settings = settings
    assert client._local_repository() is expected
    assert client._local_repository(module.Thing) is expected


def test_an_event_given_a_folder_binds_through_the_same_cache(tmp_path: Path) -> None:
    from kit import Event

    folder = write_schema(tmp_path / "given")

    class Given(Event, schema=NAME, repository=folder):
        n: int

    assert Given.__kit_repository__ is repository_for(schemas_dir=folder)
    own = SchemaRepository(folder)

    class Own(Event, schema=NAME, repository=own):
        n: int

    assert Own.__kit_repository__ is own
