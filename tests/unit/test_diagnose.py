"""kit.transport.diagnose: librdkafka's reports turned into one line naming the setting."""

from __future__ import annotations

import json
import socket
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from kit import ConfigError, load_settings
from kit.transport import diagnose

SCRAM = {
    "bootstrap.servers": "127.0.0.1:9093",
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "bob",
    "sasl.password": "wrong",
}
PREFIX = "sasl_plaintext://127.0.0.1:9093/bootstrap: "


def _diagnosis(
    *reports: tuple[int, str], config: dict[str, str] = SCRAM, logs: tuple[str, ...] = ()
) -> ConfigError | None:
    collector = diagnose.ErrorCollector(env={})
    for code, text in reports:
        collector(KafkaError(code, text))
    collector.log_lines.extend(logs)
    return collector.diagnosis(config, str(config["bootstrap.servers"]))


def test_wrong_password_names_username_and_password() -> None:
    error = _diagnosis(
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
        (
            KafkaError._AUTHENTICATION,
            PREFIX + "SASL authentication error: Authentication failed during authentication "
            "due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 312ms in "
            "state AUTH_REQ)",
        ),
    )
    assert error is not None
    assert error.setting == "KIT_KAFKA_SASL_PASSWORD"
    assert str(error) == (
        "KIT_KAFKA_SASL_PASSWORD: SASL authentication failed at 127.0.0.1:9093 as user 'bob' "
        "(SCRAM-SHA-512): check KIT_KAFKA_SASL_USERNAME / KIT_KAFKA_SASL_PASSWORD"
    )


def test_unsupported_mechanism_names_the_mechanism_setting() -> None:
    error = _diagnosis(
        (
            KafkaError._AUTHENTICATION,
            PREFIX + "SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL "
            "mechanism: broker's supported mechanisms: SCRAM-SHA-512 (after 300ms in state "
            "AUTH_HANDSHAKE)",
        ),
        config={**SCRAM, "sasl.mechanism": "SCRAM-SHA-256"},
    )
    assert error is not None and error.setting == "KIT_KAFKA_SASL_MECHANISM"
    assert str(error) == (
        "KIT_KAFKA_SASL_MECHANISM: the broker at 127.0.0.1:9093 does not take SASL mechanism "
        "SCRAM-SHA-256 (it takes SCRAM-SHA-512): check KIT_KAFKA_SASL_MECHANISM"
    )


def test_sasl_client_on_a_plaintext_listener() -> None:
    error = _diagnosis(
        (
            KafkaError._AUTHENTICATION,
            PREFIX + "SASL SCRAM-SHA-512 mechanism handshake failed: Broker: Request not valid "
            "in current SASL state: broker's supported mechanisms:  (after 2ms in state "
            "AUTH_HANDSHAKE)",
        )
    )
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL"
    assert "does not take SASL (security.protocol=SASL_PLAINTEXT)" in str(error)
    assert "KIT_KAFKA_SASL_MECHANISM" in str(error)


def test_plaintext_client_on_a_sasl_listener_from_the_log_lines() -> None:
    close = (
        "FAIL [rdkafka#producer-1] [thrd:127.0.0.1:9093/bootstrap]: 127.0.0.1:9093/bootstrap: "
        "Disconnected: connection closed by peer: receive 0 after POLLIN (after 0ms in state UP)"
    )
    plain = {"bootstrap.servers": "127.0.0.1:9093"}
    down = (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    assert _diagnosis(down, config=plain, logs=(close, close)) is None  # not sure yet
    error = _diagnosis(down, config=plain, logs=(close, close, close))
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL"
    assert str(error).startswith(
        "KIT_KAFKA_SECURITY_PROTOCOL: the broker at 127.0.0.1:9093 closed each connection "
        "right after it opened (security.protocol=PLAINTEXT)"
    )
    assert _diagnosis(down, logs=(close, close, close)) is None  # a SASL client: other causes


def test_ssl_on_a_plaintext_listener() -> None:
    error = _diagnosis(
        (
            KafkaError._TRANSPORT,
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: Disconnected: SSL connection "
            "closed by peer: connecting to a PLAINTEXT broker listener? (after 5ms in state "
            "SSL_HANDSHAKE)",
        ),
        config={"bootstrap.servers": "127.0.0.1:9093", "security.protocol": "SSL"},
    )
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL"
    assert str(error) == (
        "KIT_KAFKA_SECURITY_PROTOCOL: SSL handshake failed: Disconnected: SSL connection closed "
        "by peer: connecting to a PLAINTEXT broker listener? at 127.0.0.1:9093 "
        "(security.protocol=SSL): check KIT_KAFKA_SECURITY_PROTOCOL and the KIT_KAFKA_SSL_* "
        "settings"
    )


def test_other_authentication_failures_keep_librdkafkas_reason() -> None:
    error = _diagnosis((KafkaError._AUTHENTICATION, PREFIX + "SASL handshake went sideways"))
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL"
    assert str(error).endswith("mechanism SCRAM-SHA-512): SASL handshake went sideways")


def test_a_broker_that_is_down_or_starting_is_not_diagnosed() -> None:
    refused = (
        KafkaError._TRANSPORT,
        "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
        "(after 0ms in state CONNECT)",
    )
    collector = diagnose.ErrorCollector(env={})
    collector(KafkaError(*refused))
    collector(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert collector.diagnosis({"bootstrap.servers": "127.0.0.1:1"}, "127.0.0.1:1") is None
    assert collector.last_transport() == (
        "Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)"
    )


def test_settings_from_kit_kafka_config_are_named_so() -> None:
    settings = load_settings(env={}, kafka_config=json.dumps({"sasl.password": "x"}))
    assert diagnose.setting_name("sasl.password", settings, env={}) == (
        "KIT_KAFKA_CONFIG (sasl.password)"
    )
    env = {"KIT_KAFKA_SASL_PASSWORD": "y"}
    assert diagnose.setting_name("sasl.password", settings, env) == "KIT_KAFKA_SASL_PASSWORD"
    assert diagnose.setting_name("sasl.username", settings, env={}) == "KIT_KAFKA_SASL_USERNAME"


def test_principal_of() -> None:
    assert diagnose.principal_of(SCRAM) == "User:bob"
    assert diagnose.principal_of({}) == "User:ANONYMOUS"
    assert diagnose.principal_of({"security.protocol": "ssl"}) == (
        "this client's SSL certificate principal"
    )
    oauth = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}
    assert diagnose.principal_of(oauth) == "this client's OAUTHBEARER principal"


def test_topic_authorization_names_topic_principal_and_operation() -> None:
    err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    message = diagnose.authorization_message(
        err, topic="shop.OrderPlaced", action="produce", config=SCRAM, env={}
    )
    assert message == (
        "principal User:bob is not authorized to produce to topic 'shop.OrderPlaced' "
        "(TOPIC_AUTHORIZATION_FAILED): it needs WRITE on topic 'shop.OrderPlaced'; grant it an "
        "ACL, or set KIT_KAFKA_SASL_USERNAME to a principal that has one"
    )
    wrapped = KafkaException(err)
    assert (
        diagnose.authorization_message(
            wrapped, topic="shop.OrderPlaced", action="produce", config=SCRAM, env={}
        )
        == message
    )


def test_group_cluster_and_transactional_id_authorization() -> None:
    group = diagnose.authorization_message(
        KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
        group="billing",
        action="consume",
        config=SCRAM,
        env={},
    )
    assert group is not None
    assert group.startswith(
        "principal User:bob is not authorized to consume from group 'billing' "
        "(GROUP_AUTHORIZATION_FAILED): it needs READ on group 'billing'"
    )
    cluster = diagnose.authorization_message(
        KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED), action="create", config={}, env={}
    )
    assert cluster is not None
    assert cluster.startswith(
        "principal User:ANONYMOUS is not authorized to create on the cluster "
        "(CLUSTER_AUTHORIZATION_FAILED): it needs CREATE on the cluster"
    )
    txn = diagnose.authorization_message(
        KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        transactional_id="billing-0",
        config=SCRAM,
        env={},
    )
    assert txn is not None
    assert txn.startswith(
        "principal User:bob is not authorized on transactional id 'billing-0' "
        "(TRANSACTIONAL_ID_AUTHORIZATION_FAILED): grant it an ACL"
    )


def test_authorization_without_a_resource_name_or_from_settings() -> None:
    env = {
        "KIT_KAFKA_SASL_USERNAME": "carol",
        "KIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KIT_KAFKA_SASL_MECHANISM": "PLAIN",
    }
    settings = load_settings(env=env)
    error = diagnose.authorization_error(
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), settings=settings, env=env
    )
    assert error is not None and error.setting == "KIT_KAFKA_SASL_USERNAME"
    assert "principal User:carol is not authorized on a topic (TOPIC_AUTHORIZATION_FAILED)" in (
        str(error)
    )


def test_other_errors_are_not_authorization_errors() -> None:
    assert diagnose.authorization_message(KafkaError(KafkaError._MSG_TIMED_OUT)) is None
    assert diagnose.authorization_message(ValueError("no")) is None
    assert diagnose.authorization_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)) is None


def test_wait_until_reachable_times_out_naming_bootstrap_quietly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        diagnose.wait_until_reachable(
            {"bootstrap.servers": f"127.0.0.1:{port}"}, 1.0, source="a test", env={}
        )
    assert 1.0 <= time.monotonic() - started < 3.0
    assert raised.value.setting == "KIT_BOOTSTRAP_SERVERS"
    assert str(raised.value).startswith(
        f"KIT_BOOTSTRAP_SERVERS: no broker answered at 127.0.0.1:{port} (from a test) within 1s: "
        f"Connect to ipv4#127.0.0.1:{port} failed: Connection refused"
    )
    captured = capfd.readouterr()
    # this client's librdkafka lines went to the collector (clients of other tests may
    # still be talking on the same file descriptors: only this port's lines count)
    ours = [
        line
        for line in (captured.err + captured.out).splitlines()
        if line.startswith("%") and f"127.0.0.1:{port}" in line
    ]
    assert ours == []
