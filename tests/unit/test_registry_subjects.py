"""Which subjects a service registers under, and what a registry's "no" means (mock://)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from kit import ConfigError
from kit.config import Settings, load_settings
from kit.schema import Schema
from kit.transport.registry_format import RegistryFormat, TopicRegistrar, forget_client
from tests.fixtures.events import OrderPlaced
from tests.fixtures.interop import AllTypes


@pytest.fixture
def settings() -> Iterator[Settings]:
    url = f"mock://kit-subjects-{uuid.uuid4().hex[:8]}"
    yield load_settings(env={}, bootstrap_servers="unused:9092", schema_registry_url=url)
    forget_client(url)


def test_only_record_schemas_are_registered_at_start(settings: Settings) -> None:
    fmt = RegistryFormat(settings)
    repository = AllTypes.__kit_repository__  # records, an enum (interop.Status), a fixed
    kinds = {s.full_name: s.definition.get("type") for s in repository}
    assert {"enum", "fixed"} <= set(kinds.values())
    headers = fmt.register_all(repository)
    records = {name for name, kind in kinds.items() if kind == "record"}
    assert {f"{name}-value" for name in records} == set(fmt.client.get_subjects())
    assert {s.fingerprint for s in repository if s.full_name in records} == set(headers)


def test_dead_letter_topics_get_no_subject(settings: Settings) -> None:
    fmt = RegistryFormat(settings)
    schema: Schema = OrderPlaced.kit_schema()
    header = fmt.register(schema, schema.full_name)
    registrar = TopicRegistrar(fmt, {header: schema}, skip={"shop.orders.dlt"})
    value = header + b"body"
    assert not registrar.needs("shop.orders.dlt", value)  # a copy of a failed record
    assert registrar.needs("shop.orders", value)
    registrar.register("shop.orders")
    assert sorted(fmt.client.get_subjects()) == [f"{schema.full_name}-value", "shop.orders-value"]


def test_a_forbidden_registration_says_what_the_account_may_not_do(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmt = RegistryFormat(settings)

    def forbidden(*_args: object, **_kwargs: object) -> int:
        raise SchemaRegistryError(403, 40301, "User cannot access the resource.")

    monkeypatch.setattr(fmt.client, "register_schema", forbidden)
    schema = OrderPlaced.kit_schema()
    with pytest.raises(ConfigError) as caught:
        fmt.register(schema, "shop.orders")
    message = str(caught.value)
    assert "KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in message
    assert f"does not allow this account to register {schema.full_name} under " in message
    assert "shop.orders-value" in message and "refused the credentials" not in message
