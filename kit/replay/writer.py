"""Write recordings: RecordingWriter, an Avro container of Kafka records and writer schemas."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import fastavro
from fastavro.write import Writer

from kit.replay.format import (
    META_CREATED,
    META_FORMAT,
    META_SOURCE,
    META_TOPICS,
    PARSED_FILE_SCHEMA,
    RECORD_NAME,
    SCHEMA_ENTRY_NAME,
    SCHEMA_ID_ENTRY_NAME,
    Record,
    RecordingError,
)
from kit.schema import Schema

__all__ = ["RecordingWriter"]

# Any: the fastavro Writer, whose stubs do not know the (branch name, datum) tuple notation.


class RecordingWriter:
    """Write records to a recording, flushing whole Avro blocks at least every `flush_interval`.

    The file is valid after every flush: a process killed between flushes loses only the
    records since the last one. Writer schemas go in as `kit.replay.WriterSchema` entries
    of the same stream, each before the first record whose value needs it, and the ids
    of registry-framed values as `kit.replay.SchemaId` entries naming those schemas.
    `topics` maps every topic the file will hold to its partition count.

    The file says format 1 until its first SchemaId entry, which makes it format 2: the
    writer then overwrites that one byte of the header in place (same length).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        topics: Mapping[str, int],
        source: str = "",
        codec: str = "deflate",
        flush_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.topics = dict(topics)
        self.flush_interval = flush_interval
        self.count = 0
        self._fingerprints: set[bytes] = set()
        self._ids: dict[int, bytes] = {}
        self.format_version = "1"
        try:
            self._fo: IO[bytes] = open(self.path, "w+b")
        except OSError as exc:
            raise RecordingError(self.path, None, f"cannot create: {exc.strerror}") from None
        metadata = {
            META_FORMAT: self.format_version,
            META_CREATED: datetime.now(UTC).isoformat(timespec="milliseconds"),
            META_SOURCE: source,
            META_TOPICS: json.dumps(self.topics, sort_keys=True),
        }
        try:
            # Any: fastavro's stubs do not know the (branch name, datum) tuple notation.
            self._writer: Any = Writer(self._fo, PARSED_FILE_SCHEMA, codec=codec, metadata=metadata)
            self._writer.flush()
            self._version_at = self._version_offset()
        except Exception as exc:
            self._fo.close()
            raise RecordingError(self.path, None, f"cannot write: {exc}") from exc
        self._last_flush = time.monotonic()
        self.closed = False

    def _version_offset(self) -> int:
        """Where the format version's one byte is in the header just written."""
        self._fo.flush()
        self._fo.seek(0)
        head = self._fo.read()
        self._fo.seek(0, os.SEEK_END)
        marker = _avro_string(META_FORMAT) + _avro_string(self.format_version)
        if head.count(marker) != 1:
            raise RecordingError(self.path, None, f"no single {META_FORMAT} in the header")
        return head.index(marker) + len(marker) - 1

    def _mark_format_2(self) -> None:
        """Make the header say format 2 (before any SchemaId entry reaches the file)."""
        self._fo.flush()
        self._fo.seek(self._version_at)
        self._fo.write(b"2")
        self._fo.seek(0, os.SEEK_END)
        self._fo.flush()
        self.format_version = "2"

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def has_schema(self, fp: bytes) -> bool:
        """Whether a writer schema with this fingerprint is already in the file."""
        return fp in self._fingerprints

    def add_schema(self, schema: Schema) -> None:
        """Add a writer schema (once per fingerprint) so later readers can decode values."""
        if schema.fingerprint in self._fingerprints:
            return
        text = schema.text or json.dumps(schema.definition)
        self._writer.write((SCHEMA_ENTRY_NAME, {"fingerprint": schema.fingerprint, "schema": text}))
        self._fingerprints.add(schema.fingerprint)

    def has_schema_id(self, schema_id: int) -> bool:
        """Whether the file already says which schema this registry id stands for."""
        return schema_id in self._ids

    def add_schema_id(self, schema_id: int, schema: Schema, registry: str = "") -> None:
        """Say that registry-framed values with `schema_id` (from `registry`, a URL without
        credentials) are written with `schema`: its WriterSchema entry if new, then a SchemaId
        entry (once per id). RecordingError if the id was given another schema before."""
        known = self._ids.get(schema_id)
        if known is not None:
            if known != schema.fingerprint:
                raise RecordingError(
                    self.path,
                    None,
                    f"schema id {schema_id} is fingerprint {known.hex()} already, not "
                    f"{schema.full_name} ({schema.fingerprint.hex()})",
                )
            return
        self.add_schema(schema)
        if self.format_version != "2":
            self._mark_format_2()
        entry = {"id": schema_id, "registry": registry, "fingerprint": schema.fingerprint}
        self._writer.write((SCHEMA_ID_ENTRY_NAME, entry))
        self._ids[schema_id] = schema.fingerprint

    def write(self, record: Record) -> None:
        """Append one record; flushes a block when `flush_interval` has passed."""
        partitions = self.topics.get(record.topic)
        if partitions is None or not 0 <= record.partition < partitions:
            raise RecordingError(
                self.path,
                self.count,
                f"{record.topic}[{record.partition}] is not among the declared topics "
                f"{self.topics}",
            )
        self._writer.write(
            (
                RECORD_NAME,
                {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "timestamp_type": record.timestamp_type,
                    "key": record.key,
                    "headers": [{"name": n, "value": v} for n, v in record.headers],
                    "value": record.value,
                },
            )
        )
        self.count += 1
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush if `flush_interval` has passed since the last flush (cheap to call often)."""
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the pending block and flush it to the operating system."""
        self._writer.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush the last block and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.flush()
        finally:
            self._fo.close()


def _avro_string(text: str) -> bytes:
    buf = BytesIO()
    fastavro.schemaless_writer(buf, {"type": "string"}, text)
    return buf.getvalue()
