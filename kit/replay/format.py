"""The recording file format: its Avro schemas, metadata keys, header (RecordingInfo), the
Record entries, and RecordingError."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from kit.codec import fingerprint_of, registry_id
from kit.errors import KitError

__all__ = [
    "FILE_SCHEMA",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "META_CREATED",
    "META_FORMAT",
    "META_SOURCE",
    "META_TOPICS",
    "OCF_MAGIC",
    "PARSED_FILE_SCHEMA",
    "RECORD_NAME",
    "SCHEMA_ENTRY_NAME",
    "SCHEMA_ID_ENTRY_NAME",
    "Record",
    "RecordingError",
    "RecordingInfo",
]

FORMAT_VERSION = "2"
"""The newest format: "2" marks a file holding SchemaId entries (registry-framed values).
A file without them is written as "1", which older kit reads too."""
FORMAT_VERSIONS = ("1", "2")
"""The formats this kit reads."""
OCF_MAGIC = b"Obj\x01"
RECORD_NAME = "kit.replay.Record"
SCHEMA_ENTRY_NAME = "kit.replay.WriterSchema"
SCHEMA_ID_ENTRY_NAME = "kit.replay.SchemaId"
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
SCHEMA_ID_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "SchemaId",
    "namespace": "kit.replay",
    "doc": "A schema registry id of later registry-framed values (00, the 4-byte id, the body), "
    "and the fingerprint of its schema, whose WriterSchema entry comes before it.",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "registry", "type": "string", "doc": "the registry's URL, without credentials"},
        {"name": "fingerprint", "type": "kit.replay.Fingerprint"},
    ],
}
FILE_SCHEMA: list[dict[str, Any]] = [RECORD_SCHEMA, SCHEMA_ENTRY_SCHEMA, SCHEMA_ID_ENTRY_SCHEMA]
PARSED_FILE_SCHEMA = fastavro.parse_schema(FILE_SCHEMA)


@dataclass(frozen=True)
class RecordingInfo:
    """A recording's header: format version, creation time, source cluster, topics."""

    format_version: str
    created_at: str
    source: str
    topics: dict[str, int] = field(default_factory=dict)
    codec: str = "null"


class RecordingError(KitError):
    """A recording file is missing, corrupt, truncated or not a kit recording.

    `path` names the file and `index` the record (0-based, counting Kafka records only)
    that could not be read; `published` is set by `replay` to what it published before.
    """

    def __init__(self, path: Path | str, index: int | None, problem: str) -> None:
        self.path = str(path)
        self.index = index
        self.problem = problem
        self.published: int | None = None
        where = f"{self.path}: record {index}" if index is not None else self.path
        super().__init__(f"{where}: {problem}")

    def cli_lines(self) -> list[str]:
        """The problem, and how much a replay published before it."""
        lines = [str(self)]
        if self.published is not None:
            lines.append(f"{self.published:,} record(s) were published before it")
        return lines


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded Kafka record; `timestamp` is in milliseconds since the epoch."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int = 1
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    value: bytes | None = None

    @property
    def fingerprint(self) -> bytes | None:
        """The writer schema fingerprint of the value, if it is Avro single-object encoded."""
        return fingerprint_of(self.value) if self.value is not None else None

    @property
    def schema_id(self) -> int | None:
        """The schema registry id of the value, if it is registry-framed (00 + 4-byte id)."""
        return registry_id(self.value[:5]) if self.value is not None else None

    def raw_size(self) -> int:
        """Bytes of key, value, header names and header values: the payload on the wire."""
        size = len(self.key or b"") + len(self.value or b"")
        for name, value in self.headers:
            size += len(name.encode()) + len(value or b"")
        return size
