"""docker-compose.yml, checked without Docker: it parses, runs real targets, names real
settings, runs the Kafka `kit broker` runs, and its addresses and ports agree."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import kit.registry  # noqa: F401  (its RegistryConfig: KIT_REGISTRY_* are known variables)
from kit.broker import KAFKA_VERSION
from kit.config import known_variables
from kit.loading import load_service
from kit.service import Service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:  # Any: YAML
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shop's services: every service built from the repository (not Kafka's image)."""
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def _default(value: str) -> str:
    """A compose value with `${NAME:-default}` interpolations replaced by their defaults."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _listeners(text: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` as {NAME: (host, port)}."""
    found = {}
    for item in text.split(","):
        match = re.fullmatch(r"(\w+)://([^:]*):(\d+)", item.strip())
        assert match, f"not a listener: {item!r}"
        found[match.group(1)] = (match.group(2), int(match.group(3)))
    return found


def test_kafka_is_the_official_image_at_the_local_brokers_version(compose: dict[str, Any]) -> None:
    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{KAFKA_VERSION}", "kit broker runs Kafka " + KAFKA_VERSION
    env = compose["services"]["kafka"]["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]


def test_every_kit_run_target_is_a_kit_service(compose: dict[str, Any]) -> None:
    targets = []
    for name, spec in _services(compose).items():
        command = spec["command"]
        if command[:2] == ["kit", "run"]:
            for target in command[2:]:
                assert isinstance(load_service(target), Service), f"{name}: {target}"
                targets.append(target)
    assert {t.split(":")[0] for t in targets} >= {
        "services.orders",
        "services.inventory",
        "services.payments",
        "services.notifications",
    }


def test_the_faust_worker_runs_an_app_that_imports(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    faust = pytest.importorskip("faust")
    workers = [s for s in _services(compose).values() if s["command"][0] == "faust"]
    assert len(workers) == 1
    command = workers[0]["command"]
    assert "worker" in command
    for key, value in workers[0]["environment"].items():  # as in its container
        monkeypatch.setenv(key, _default(str(value)))
    module, _, attr = command[command.index("-A") + 1].partition(":")  # -A module[:attr]
    app = getattr(importlib.import_module(module), attr or "app")
    assert isinstance(app, faust.App)


def test_docs_shop_runs_the_faust_worker_as_compose_does(compose: dict[str, Any]) -> None:
    """Each `faust -A ... worker` command in docs/shop.md has compose's options (among them
    --without-web: docs/faust.md says why)."""
    worker = next(s for s in _services(compose).values() if s["command"][0] == "faust")
    text = " ".join((ROOT / "docs" / "shop.md").read_text(encoding="utf-8").split())
    commands = re.findall(r"`(faust -A [^`]*)`", text)
    assert commands, "docs/shop.md shows how the Faust worker runs"
    for command in commands:
        assert command.split() == worker["command"], command


def test_every_kit_variable_is_one_kit_reads(compose: dict[str, Any]) -> None:
    known = known_variables()
    named = {
        key
        for spec in _services(compose).values()
        for key in spec.get("environment", {})
        if key.startswith("KIT_") and not key.startswith("KIT_KAFKA_")
    }
    assert named, "the services get their settings from KIT_* variables"
    assert named <= known, f"not kit settings: {sorted(named - known)}"


def test_every_shop_variable_is_one_a_service_reads(compose: dict[str, Any]) -> None:
    """Each SHOP_* setting compose gives a service is read by the code under services/.
    (SHOP_BOOTSTRAP_SERVERS, in `${...}`, is compose's own: it sets no container variable.)"""
    named = {
        key
        for spec in _services(compose).values()
        for key in spec.get("environment", {})
        if key.startswith("SHOP_")
    }
    assert named, "the shop's own settings are SHOP_* variables"
    code = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "services").rglob("*.py"))
    for name in sorted(named):
        read = rf"os\.(?:environ\.get|getenv)\(\s*\"{name}\"|os\.environ\[\s*\"{name}\"\]"
        assert re.search(read, code), f"{name}: no code under services/ reads it"


def test_services_start_after_the_broker_is_healthy(compose: dict[str, Any]) -> None:
    assert "healthcheck" in compose["services"]["kafka"]
    for name, spec in _services(compose).items():
        assert spec["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert spec.get("build") == ".", f"{name} is built from the repository's Dockerfile"
    assert (ROOT / "Dockerfile").is_file()


def test_every_kit_service_is_healthy_when_its_health_ready_says_so(
    compose: dict[str, Any],
) -> None:
    """Each `kit run` service's health check asks /health/ready on its KIT_METRICS_PORT, with
    python (the image has no curl), and fails on a 503 (urlopen raises); the Faust worker,
    which serves no kit endpoint, is healthy once its bridge announced it in the registry."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:", dockerfile, re.M), "the health check runs python"
    kit_runs = 0
    for name, spec in _services(compose).items():
        check = spec["healthcheck"]["test"]
        if spec["command"][:2] == ["kit", "run"]:
            kit_runs += 1
            port = int(_default(str(spec["environment"]["KIT_METRICS_PORT"])))
            assert check[:3] == ["CMD", "python", "-c"], name
            code = check[3]
            assert f"urlopen('http://127.0.0.1:{port}/health/ready'" in code, name
            compile(code, name, "exec")  # the command is valid python
        else:  # the Faust worker: its kit.faust bridge announces the app as customer_stats
            assert "kit services --service customer_stats " in " ".join(check), name
    assert kit_runs >= 4


def test_addresses_and_ports_agree(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) == set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    assert set(advertised) == set(listeners) - {controller}
    for name, (_host, port) in advertised.items():
        assert listeners[name][1] == port, f"{name}: advertised port = listening port"
    voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1]
    assert voter == f"{kafka.get('hostname', 'kafka')}:{listeners[controller][1]}"
    # inside the network: every service's bootstrap is the internal advertised listener
    internal = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert internal[0] in {"kafka", kafka.get("hostname")}
    for name, spec in _services(compose).items():
        bootstrap = _default(spec["environment"]["KIT_BOOTSTRAP_SERVERS"])
        assert bootstrap == f"{internal[0]}:{internal[1]}", name
    assert f"{internal[0]}:{internal[1]}" in " ".join(kafka["healthcheck"]["test"])
    # from the host: the published port is the external advertised one, on localhost
    published = {int(h): int(c) for h, c in (p.split(":")[-2:] for p in kafka["ports"])}
    external = [a for n, a in advertised.items() if n != env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert external, "a listener for clients on the host"
    for host, port in external:
        assert host == "localhost" and published.get(port) == port


def test_every_service_but_kafka_is_built_from_the_repository(compose: dict[str, Any]) -> None:
    """No one-shot Kafka tool beside them: the Faust worker's kit bridge creates its
    table's changelog topic as it starts (kit.faust), as the kit services create theirs."""
    assert set(compose["services"]) - set(_services(compose)) == {"kafka"}
