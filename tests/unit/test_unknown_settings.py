"""An unknown KIT_* variable is named once, with the closest valid name (issue 11, point 5)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit import config
from kit.config import load_settings
from kit.registry.model import RegistryConfig
from tests.unit.no_broker import closed_port, run_kit


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    config.forget_warned_variables()
    yield
    config.forget_warned_variables()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.message for r in caplog.records if r.name == "kit.config"]


def test_a_misspelt_setting_names_the_closest_valid_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kit.config"):
        config.warn_unknown_variables({"KIT_RETRYS": "5", "KIT_REGISTRY_TTLL": "3"})
    assert _warnings(caplog) == [
        "unknown setting KIT_REGISTRY_TTLL (did you mean KIT_REGISTRY_TTL?): kit ignores it",
        "unknown setting KIT_RETRYS (did you mean KIT_RETRIES?): kit ignores it",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_each_unknown_name_is_warned_once_and_load_settings_never_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"KIT_RETRYS": "5"}
    with caplog.at_level(logging.WARNING, logger="kit.config"):
        load_settings(env)
        assert _warnings(caplog) == []
        config.warn_unknown_variables(env)
        config.warn_unknown_variables(env)
        load_settings(env)
    assert len(_warnings(caplog)) == 1


def test_a_name_like_no_other_is_still_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kit.config"):
        config.warn_unknown_variables({"KIT_ZZZ": "1"})
    assert _warnings(caplog) == ["unknown setting KIT_ZZZ: kit ignores it"]


def test_every_known_name_and_the_pass_through_are_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    known = {f"KIT_{name.upper()}" for name in config.Settings.model_fields}
    known |= {f"KIT_{name.upper()}" for name in config.ToolSettings.model_fields}
    known |= {f"KIT_REGISTRY_{name.upper()}" for name in RegistryConfig.model_fields}
    known |= {"KIT_LOG_LEVEL", "KIT_KAFKA_SASL_PASSWORD", "KIT_KAFKA_ANY_THING_AT_ALL"}
    env = {name: "x" for name in known} | {"OTHER": "1", "BENCH_KIT_X": "1"}
    with caplog.at_level(logging.WARNING, logger="kit.config"):
        config.warn_unknown_variables(env)
    assert _warnings(caplog) == []
    assert config.unknown_variables(env) == {}


def test_kit_run_warns_once_about_an_unknown_kit_variable(tmp_path: Path) -> None:
    code, lines, _took = run_kit(
        tmp_path,
        "run",
        "tests.fixtures.billing:service",
        KIT_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",
        KIT_CONNECT_TIMEOUT="1",
        KIT_RETRYS="5",
        KIT_REGISTRY_TTL="9",
        KIT_KAFKA_CLIENT_RACK="r1",
    )
    assert code == 2, lines
    warned = [line for line in lines if "KIT_RETRYS" in line]
    assert len(warned) == 1, lines  # kit run and the runtime's start both check
    assert (
        "WARNING kit.config: unknown setting KIT_RETRYS (did you mean KIT_RETRIES?)" in (warned[0])
    ), lines
    assert not [line for line in lines if "KIT_REGISTRY_TTL" in line or "CLIENT_RACK" in line]
