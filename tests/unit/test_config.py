"""Settings from the environment: names in errors, pass-through client settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit import ConfigError, Service
from kit.config import client_config, load_settings, load_tool_settings, resolve_bootstrap


def test_defaults_and_values_from_the_environment() -> None:
    s = load_settings({"KIT_BOOTSTRAP_SERVERS": "b:9092", "KIT_RETRIES": "5"})
    assert (s.bootstrap_servers, s.retries, s.shutdown_timeout) == ("b:9092", 5, 30.0)
    assert resolve_bootstrap(s) == ("b:9092", "KIT_BOOTSTRAP_SERVERS")


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"KIT_SHUTDOWN_TIMEOUT": "soon"}, "KIT_SHUTDOWN_TIMEOUT"),
        ({"KIT_TOPIC_PARTITIONS": "0"}, "KIT_TOPIC_PARTITIONS"),
        ({"KIT_BATCH_SIZE": "-3"}, "KIT_BATCH_SIZE"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == name
    assert str(info.value).startswith(f"{name}: ")


def test_tool_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIT_BROKER_DIR", raising=False)  # the tests' broker fixture sets it
    tools = load_tool_settings(
        {"KIT_BROKER_PORT": " 9093 ", "KIT_CACHE_DIR": "/c", "KIT_KAFKA_VERSION": "", "KIT_X": "1"}
    )
    assert (tools.broker_port, tools.cache_root, tools.kafka_version) == (9093, Path("/c"), None)
    assert not tools.keep_broker and tools.broker_dir is None
    assert load_tool_settings({}).cache_root == Path.home() / ".cache" / "kit"
    assert load_tool_settings({"KIT_KEEP_BROKER": "1"}, broker_port=1).keep_broker


def test_schema_registry_tool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIR", "PORT", "JAVA_HOME"):  # ./dev test exports ..._JAVA_HOME
        monkeypatch.delenv(f"KIT_SCHEMA_REGISTRY_{name}", raising=False)
    tools = load_tool_settings({})
    assert tools.schema_registry_dir == Path.home() / ".cache" / "kit" / "schema-registry"
    assert (tools.schema_registry_port, tools.apicurio_version) == (8081, "3.3.3")
    assert tools.schema_registry_java_home is None and not tools.keep_schema_registry
    tools = load_tool_settings(
        {
            "KIT_SCHEMA_REGISTRY_DIR": "/r",
            "KIT_SCHEMA_REGISTRY_PORT": "18081",
            "KIT_APICURIO_VERSION": "3.0.9",
            "KIT_SCHEMA_REGISTRY_JAVA_HOME": "/usr/lib/jvm/temurin-25-jdk-amd64",
            "KIT_KEEP_SCHEMA_REGISTRY": "1",
        }
    )
    assert (tools.schema_registry_dir, tools.schema_registry_port) == (Path("/r"), 18081)
    assert tools.apicurio_version == "3.0.9" and tools.keep_schema_registry
    assert tools.schema_registry_java_home == Path("/usr/lib/jvm/temurin-25-jdk-amd64")
    with pytest.raises(ConfigError, match="KIT_SCHEMA_REGISTRY_PORT"):
        load_tool_settings({"KIT_SCHEMA_REGISTRY_PORT": "0"})


def test_schema_registry_settings() -> None:
    settings = load_settings({})
    assert settings.schema_registry_url is None
    assert settings.schema_registry_subject_strategy == "topic" and settings.schema_registry_write
    settings = load_settings(
        {
            "KIT_SCHEMA_REGISTRY_URL": "http://a:8081,https://b:8081",
            "KIT_SCHEMA_REGISTRY_SUBJECT_STRATEGY": "record",
            "KIT_SCHEMA_REGISTRY_WRITE": "false",
        }
    )
    assert settings.schema_registry_url == "http://a:8081,https://b:8081"
    assert settings.schema_registry_subject_strategy == "record"
    assert not settings.schema_registry_write
    assert load_settings({"KIT_SCHEMA_REGISTRY_URL": " "}).schema_registry_url is None
    with pytest.raises(ConfigError, match=r"KIT_SCHEMA_REGISTRY_URL: .*'b:8081'"):
        load_settings({"KIT_SCHEMA_REGISTRY_URL": "http://a:8081,b:8081"})


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"KIT_BROKER_PORT": "abc"}, "KIT_BROKER_PORT"),
        ({"KIT_BROKER_PORT": "70000"}, "KIT_BROKER_PORT"),
        ({"KIT_KEEP_BROKER": "maybe"}, "KIT_KEEP_BROKER"),
    ],
)
def test_a_bad_tool_setting_names_its_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_tool_settings(env)
    assert info.value.setting == name


def test_client_settings_pass_through() -> None:
    env = {
        "KIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KIT_KAFKA_SASL_MECHANISM": "PLAIN",
        "KIT_KAFKA_CONFIG": '{"ssl.ca.location": "/etc/ca.pem"}',
    }
    config = client_config(load_settings(env), env)
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_kits_own_kafka_settings_are_not_passed_to_librdkafka() -> None:
    """KIT_KAFKA_VERSION (the local broker's version) and KIT_KAFKA_IMAGE (the test
    container's) share the pass-through prefix; sent to librdkafka as `version` and
    `image`, they made every client of a service fail with an unknown property."""
    env = {"KIT_KAFKA_VERSION": "4.4.0", "KIT_KAFKA_IMAGE": "apache/kafka:4.1.0"}
    assert client_config(load_settings(env), env) == {}


def test_bad_json_config_is_named() -> None:
    env = {"KIT_KAFKA_CONFIG": "[1, 2"}
    with pytest.raises(ConfigError, match="KIT_KAFKA_CONFIG"):
        client_config(load_settings(env), env)


def test_service_declaration_errors_name_the_handler() -> None:
    svc = Service("s")
    with pytest.raises(ConfigError, match="annotated with an Event"):

        @svc.handler(topic="t")
        async def untyped(event) -> None:
            pass

    with pytest.raises(ConfigError, match=r"Service\.name"):
        Service("has space")
