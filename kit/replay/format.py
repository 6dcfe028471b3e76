"""The recording file format: its Avro schemas, metadata keys and header (RecordingInfo)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fastavro

__all__ = [
    "FILE_SCHEMA",
    "FORMAT_VERSION",
    "META_CREATED",
    "META_FORMAT",
    "META_SOURCE",
    "META_TOPICS",
    "OCF_MAGIC",
    "PARSED_FILE_SCHEMA",
    "RECORD_NAME",
    "SCHEMA_ENTRY_NAME",
    "RecordingInfo",
]

FORMAT_VERSION = "1"
OCF_MAGIC = b"Obj\x01"
RECORD_NAME = "kit.replay.Record"
SCHEMA_ENTRY_NAME = "kit.replay.WriterSchema"
META_FORMAT = "kit.replay.format"
META_CREATED = "kit.replay.created_at"
META_SOURCE = "kit.replay.source"
META_TOPICS = "kit.replay.topics"

# Any: every Any here is a JSON value of an Avro schema.

HEADER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Header",
    "fields": [{"name": "name", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}],
}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Record",
    "namespace": "kit.replay",
    "doc": "One Kafka record, with its key, headers and value bytes exactly as on the wire.",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long", "doc": "milliseconds since the epoch"},
        {"name": "timestamp_type", "type": "int", "doc": "0 none, 1 create, 2 log append"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "headers", "type": {"type": "array", "items": HEADER_SCHEMA}},
        {"name": "value", "type": ["null", "bytes"]},
    ],
}
SCHEMA_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "WriterSchema",
    "namespace": "kit.replay",
    "doc": "A writer schema of later values: the fingerprint and the schema's JSON text.",
    "fields": [
        {"name": "fingerprint", "type": {"type": "fixed", "name": "Fingerprint", "size": 8}},
        {"name": "schema", "type": "string"},
    ],
}
FILE_SCHEMA: list[dict[str, Any]] = [RECORD_SCHEMA, SCHEMA_ENTRY_SCHEMA]
PARSED_FILE_SCHEMA = fastavro.parse_schema(FILE_SCHEMA)


@dataclass(frozen=True)
class RecordingInfo:
    """A recording's header: format version, creation time, source cluster, topics."""

    format_version: str
    created_at: str
    source: str
    topics: dict[str, int] = field(default_factory=dict)
    codec: str = "null"
