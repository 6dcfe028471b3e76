"""A SASL/SCRAM broker with ACLs (`kit broker start --sasl`): right and wrong credentials,
wrong mechanism and protocol, and a principal without ACLs, each reported as such."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kit import Client, ConfigError, KitError, load_settings
from kit.broker import local
from kit.broker.process import free_port
from kit.cli import main as kit_main
from kit.testing.process import OutputLines, spawn_python
from kit.transport import diagnose
from kit.transport.admin import ensure_topics
from kit.transport.kafka import admin_client, check_reachable
from tests.fixtures.events import OrderPlaced
from tests.integration.helpers import order

ROOT = Path(__file__).resolve().parents[2]
FAST = 5.0  # seconds a diagnosed failure may take, against a 15 s connect timeout


def broker_cli(*args: str) -> int:
    """`kit broker ARGS...` through the kit CLI; wrong usage counts as exit 2."""
    try:
        return kit_main(["broker", *args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _free_port() -> int:
    return free_port()  # below the ephemeral range: no connection takes it meanwhile


@contextlib.contextmanager
def _broker_env(data_dir: Path, port: int) -> Iterator[None]:
    """Point kit.broker.local at our own data dir and port, only for the calls inside."""
    saved = {k: os.environ.get(k) for k in ("KIT_BROKER_DIR", "KIT_BROKER_PORT")}
    os.environ.update(KIT_BROKER_DIR=str(data_dir), KIT_BROKER_PORT=str(port))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.BrokerInfo]:
    """A SASL broker of this module only: its own data dir and port."""
    data_dir = tmp_path_factory.mktemp("sasl-broker")
    port = _free_port()
    with _broker_env(data_dir, port):
        info = local.start(port, timeout=120, sasl=True)
    try:
        yield info
    finally:
        with _broker_env(data_dir, port):
            local.stop()


@pytest.fixture(scope="module")
def users(sasl_broker: local.BrokerInfo) -> dict[str, str]:
    """alice may use topics and groups starting with t-sasl-alice- plus the schema topic;
    bob only the schema topic."""
    passwords = {"alice": "alice-secret", "bob": "bob-secret"}
    for name, password in passwords.items():
        local.add_scram_user(name, password, info=sasl_broker)
    local.add_acls(
        "alice",
        topics=["t-sasl-alice-"],
        groups=["t-sasl-alice-", "kit-client-"],
        prefixed=True,
        info=sasl_broker,
    )
    for user in passwords:
        local.add_acls(user, topics=["_kit_schemas"], info=sasl_broker)
    return passwords


def _sasl_env(bootstrap: str, user: str, password: str, mechanism: str = "SCRAM-SHA-512"):
    return {
        "KIT_BOOTSTRAP_SERVERS": bootstrap,
        "KIT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KIT_KAFKA_SASL_MECHANISM": mechanism,
        "KIT_KAFKA_SASL_USERNAME": user,
        "KIT_KAFKA_SASL_PASSWORD": password,
    }


def _use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("KIT_KAFKA_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _check(timeout: float = 15.0) -> tuple[ConfigError | None, float]:
    """Run check_reachable as every kit runtime does first; return its error and duration."""
    settings = load_settings()
    started = time.monotonic()
    try:
        check_reachable(admin_client(settings), settings, timeout)
    except ConfigError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_sasl_server_properties(tmp_path: Path) -> None:
    text = local.server_properties(19092, 19093, tmp_path, admin_password="pw")
    props = dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert (
        'username="admin" password="pw";'
        in (props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"])
    )
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    plain = local.server_properties(19092, 19093, tmp_path)
    assert "sasl.enabled.mechanisms" not in plain and "authorizer.class.name" not in plain
    assert "PLAINTEXT://127.0.0.1:19092" in plain


@pytest.mark.integration
def test_status_says_sasl_and_how_to_connect(
    sasl_broker: local.BrokerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    with _broker_env(sasl_broker.data_dir, sasl_broker.port):
        assert broker_cli("status") == 0
        assert local.status() == sasl_broker
        with pytest.raises(KitError, match=r"already runs .* \(with SASL\)"):
            local.start(sasl=False)
    out = capsys.readouterr().out
    assert "SASL_PLAINTEXT with SCRAM-SHA-512" in out
    for key, value in sasl_broker.client_env().items():
        assert f"export {key}={value}" in out
    assert f"KIT_KAFKA_SASL_PASSWORD={sasl_broker.admin_password}" in out
    assert sasl_broker.admin_password and len(sasl_broker.admin_password) >= 16
    assert "admin_password" not in repr(sasl_broker)


@pytest.mark.integration
def test_right_credentials_create_produce_consume(
    sasl_broker: local.BrokerInfo, users: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, _sasl_env(sasl_broker.bootstrap_servers, "alice", users["alice"]))
    error, _took = _check()
    assert error is None
    settings = load_settings()
    topic = f"t-sasl-alice-{uuid.uuid4().hex[:8]}"
    from kit.transport.admin import TopicSpec

    assert ensure_topics(admin_client(settings), [TopicSpec(topic, 2, 1)]) == [topic]
    sent = order(7)

    async def scenario() -> list[OrderPlaced]:
        async with Client(settings) as client:
            await client.publish(sent, key=sent.order_id, topic=topic)
            return [e async for _m, e in client.consume(topic, OrderPlaced, timeout=5, limit=1)]

    assert asyncio.run(scenario()) == [sent]


@pytest.mark.integration
def test_wrong_password_fails_fast_naming_the_settings(
    sasl_broker: local.BrokerInfo, users: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, _sasl_env(sasl_broker.bootstrap_servers, "alice", "not-her-password"))
    error, took = _check()
    assert error is not None
    assert error.setting == "KIT_KAFKA_SASL_PASSWORD"
    assert str(error) == (
        "KIT_KAFKA_SASL_PASSWORD: SASL authentication failed at "
        f"{sasl_broker.bootstrap_servers} as user 'alice' (SCRAM-SHA-512): "
        "check KIT_KAFKA_SASL_USERNAME / KIT_KAFKA_SASL_PASSWORD"
    )
    assert took < FAST, f"took {took:.1f}s"


@pytest.mark.integration
def test_wrong_password_through_the_cli(
    sasl_broker: local.BrokerInfo, users: dict[str, str]
) -> None:
    env = {
        "PYTHONPATH": str(ROOT),
        **_sasl_env(sasl_broker.bootstrap_servers, "alice", "not-her-password"),
    }
    started = time.monotonic()
    proc = spawn_python(
        ["-m", "kit.cli", "run", "tests.fixtures.billing:service"], env=env, cwd=ROOT
    )
    out = OutputLines(proc)
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - started
    out.wait(lambda lines: True if out.ended else None, 10, "output end")
    expected = (
        "kit: configuration error: KIT_KAFKA_SASL_PASSWORD: SASL authentication failed at "
        f"{sasl_broker.bootstrap_servers} as user 'alice' (SCRAM-SHA-512): "
        "check KIT_KAFKA_SASL_USERNAME / KIT_KAFKA_SASL_PASSWORD\n"
    )
    assert expected in out.lines, "".join(out.lines)
    assert took < FAST + 3, f"took {took:.1f}s:\n{''.join(out.lines)}"  # + interpreter start
    raw = [line for line in out.lines if line.startswith("%")]
    assert len(raw) <= 4, "".join(out.lines)  # librdkafka lines of other clients, if any


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mechanism", "setting", "text"),
    [
        ("SCRAM-SHA-256", "KIT_KAFKA_SASL_MECHANISM", "does not take SASL mechanism SCRAM-SHA-256"),
        ("PLAIN", "KIT_KAFKA_SASL_MECHANISM", "(it takes SCRAM-SHA-512)"),
    ],
)
def test_wrong_mechanism_names_it(
    sasl_broker: local.BrokerInfo,
    users: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    mechanism: str,
    setting: str,
    text: str,
) -> None:
    env = _sasl_env(sasl_broker.bootstrap_servers, "alice", users["alice"], mechanism)
    _use(monkeypatch, env)
    error, took = _check()
    assert error is not None and error.setting == setting, error
    assert text in str(error)
    assert took < FAST


@pytest.mark.integration
def test_plaintext_client_on_the_sasl_listener(
    sasl_broker: local.BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, {"KIT_BOOTSTRAP_SERVERS": sasl_broker.bootstrap_servers})
    error, took = _check()
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL", error
    assert "probably requires SASL or SSL" in str(error)
    assert took < FAST


@pytest.mark.integration
def test_sasl_client_on_a_plaintext_listener(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, _sasl_env(kafka_bootstrap, "alice", "whatever"))
    error, took = _check()
    assert error is not None and error.setting == "KIT_KAFKA_SECURITY_PROTOCOL", error
    assert "does not take SASL" in str(error)
    assert took < FAST


@pytest.mark.integration
def test_no_acl_on_a_topic_is_an_authorization_error_naming_it(
    sasl_broker: local.BrokerInfo, users: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"t-sasl-private-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(sasl_broker.client_config())
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)
    env = _sasl_env(sasl_broker.bootstrap_servers, "bob", users["bob"])
    _use(monkeypatch, env)
    settings = load_settings()
    assert _check()[0] is None  # bob authenticates; the topic is what he may not use

    # A plain producer: the delivery report's error, read by the diagnose function.
    from kit.config import client_config

    config = {"bootstrap.servers": sasl_broker.bootstrap_servers, **client_config(settings)}
    reports: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 10_000})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(15)
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    message = diagnose.authorization_message(
        reports[0], topic=topic, action="produce", settings=settings
    )
    assert message == (
        f"principal User:bob is not authorized to produce to topic {topic!r} "
        f"(TOPIC_AUTHORIZATION_FAILED): it needs WRITE on topic {topic!r}; grant it an ACL, "
        "or set KIT_KAFKA_SASL_USERNAME to a principal that has one"
    )
    error = diagnose.authorization_error(reports[0], topic=topic, settings=settings)
    assert error is not None and error.setting == "KIT_KAFKA_SASL_USERNAME"

    # Through kit's Client: the failure names the topic and says it is about authorization.
    async def publish() -> None:
        async with Client(settings) as client:
            await client.publish(order(1), topic=topic)

    started = time.monotonic()
    with pytest.raises(KitError) as raised:
        asyncio.run(publish())
    assert topic in str(raised.value)
    assert "authorization" in str(raised.value).lower(), str(raised.value)
    assert time.monotonic() - started < 15


@pytest.mark.integration
def test_the_data_dir_keeps_its_mode_users_and_password(
    sasl_broker: local.BrokerInfo, users: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in this module: it restarts the module's broker."""
    with _broker_env(sasl_broker.data_dir, sasl_broker.port):
        with pytest.raises(KitError, match="formatted for SASL"):
            local._admin_password(sasl_broker.data_dir, False)
        with monkeypatch.context() as patched:
            patched.setenv("KIT_BROKER_ADMIN_PASSWORD", "another-one")
            with pytest.raises(ConfigError, match="KIT_BROKER_ADMIN_PASSWORD"):
                local._admin_password(sasl_broker.data_dir, True)
        assert local.stop() is True
        again = local.start(sasl_broker.port, timeout=120)  # no sasl=: the data's mode
    assert again.sasl and again.admin_password == sasl_broker.admin_password
    _use(monkeypatch, _sasl_env(again.bootstrap_servers, "alice", users["alice"]))
    assert _check()[0] is None  # users live in the metadata log
