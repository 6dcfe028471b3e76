"""kit's local schema registry (Apicurio Registry) through the ``kit_schema_registry`` fixture,
spoken to with confluent-kafka's own Schema Registry client."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.schema_registry]


def _record(*fields: dict[str, object]) -> str:
    return json.dumps({"type": "record", "name": "OrderPlaced", "namespace": "shop",
                       "fields": [{"name": "id", "type": "string"}, *fields]})  # fmt: skip


def test_register_read_and_refuse_under_backward(kit_schema_registry: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    assert kit_schema_registry.endswith("/apis/ccompat/v7")
    client = SchemaRegistryClient({"url": kit_schema_registry})
    subject = f"t-{uuid.uuid4().hex[:8]}-value"
    v1 = _record()
    first = client.register_schema(subject, Schema(v1, "AVRO"))
    again = SchemaRegistryClient({"url": kit_schema_registry})  # no client-side cache
    assert again.register_schema(subject, Schema(v1, "AVRO")) == first  # idempotent
    assert json.loads(again.get_schema(first).schema_str) == json.loads(v1)

    # the rule kit's local registry starts with, as a Confluent registry's default
    assert client.get_compatibility() == "BACKWARD"
    assert client.get_compatibility(subject) == "BACKWARD"

    compatible = _record({"name": "note", "type": "string", "default": ""})
    second = client.register_schema(subject, Schema(compatible, "AVRO"))
    assert second != first
    assert client.get_latest_version(subject).schema_id == second
    assert client.get_versions(subject) == [1, 2]

    refused = _record({"name": "coupon", "type": "string"})  # no default: not BACKWARD
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, Schema(refused, "AVRO"))
    assert caught.value.http_status_code == 409
    assert f"Incompatible artifact: {subject} [AVRO]" in caught.value.error_message
    assert "coupon at /fields/" in caught.value.error_message
