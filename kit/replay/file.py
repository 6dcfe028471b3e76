"""Write and read recordings: Avro container files of Kafka records and their writer schemas."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import fastavro
from fastavro.write import Writer

from kit.codec import Codec, fingerprint_of
from kit.errors import DecodeError, KitError, SchemaError
from kit.replay.format import (
    FORMAT_VERSION,
    META_CREATED,
    META_FORMAT,
    META_SOURCE,
    META_TOPICS,
    OCF_MAGIC,
    PARSED_FILE_SCHEMA,
    RECORD_NAME,
    SCHEMA_ENTRY_NAME,
    RecordingInfo,
)
from kit.schema import Schema

__all__ = [
    "Record",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "read_schemas",
]

# Any: every Any here is Avro data, or a fastavro object its stubs do not describe (a Block's
# bytes_, the (branch name, datum) tuples of return_record_name, the Writer).

_CODEC = Codec()  # verifies recorded values against their writer schemas


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

    def raw_size(self) -> int:
        """Bytes of key, value, header names and header values: the payload on the wire."""
        size = len(self.key or b"") + len(self.value or b"")
        for name, value in self.headers:
            size += len(name.encode()) + len(value or b"")
        return size


class RecordingWriter:
    """Write records to a recording, flushing whole Avro blocks at least every `flush_interval`.

    The file is valid after every flush: a process killed between flushes loses only the
    records since the last one. Writer schemas go in as `kit.replay.WriterSchema` entries
    of the same stream, each before the first record whose value needs it.
    `topics` maps every topic the file will hold to its partition count.
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
        try:
            self._fo: IO[bytes] = open(self.path, "wb")
        except OSError as exc:
            raise RecordingError(self.path, None, f"cannot create: {exc.strerror}") from None
        metadata = {
            META_FORMAT: FORMAT_VERSION,
            META_CREATED: datetime.now(UTC).isoformat(timespec="milliseconds"),
            META_SOURCE: source,
            META_TOPICS: json.dumps(self.topics, sort_keys=True),
        }
        try:
            # Any: fastavro's stubs do not know the (branch name, datum) tuple notation.
            self._writer: Any = Writer(self._fo, PARSED_FILE_SCHEMA, codec=codec, metadata=metadata)
            self._writer.flush()
        except Exception as exc:
            self._fo.close()
            raise RecordingError(self.path, None, f"cannot write: {exc}") from exc
        self._last_flush = time.monotonic()
        self.closed = False

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


class RecordingReader:
    """Read a recording: iterate `(index, Record)`; `schemas` fills in as entries are read.

    Anything wrong with the file raises RecordingError naming the file and the index of
    the first record that could not be read. With `verify_values`, each single-object
    encoded value is also decoded with its writer schema from the file.
    """

    def __init__(self, path: Path | str, *, verify_values: bool = False) -> None:
        self.path = Path(path)
        self.verify_values = verify_values
        self.schemas: dict[bytes, Schema] = {}
        self.unverified = 0
        try:
            self._fo: IO[bytes] = open(self.path, "rb")
        except OSError as exc:
            raise RecordingError(self.path, None, f"cannot open: {exc.strerror}") from None
        try:
            self.info = self._read_header()
        except BaseException:
            self._fo.close()
            raise

    def _read_header(self) -> RecordingInfo:
        magic = self._fo.read(4)
        if magic != OCF_MAGIC:
            raise RecordingError(
                self.path,
                None,
                f"not an Avro object container file (magic {magic.hex(' ') or 'empty'}, "
                f"expected {OCF_MAGIC.hex(' ')})",
            )
        self._fo.seek(0)
        try:
            self._blocks = fastavro.block_reader(self._fo, return_record_name=True)
        except Exception as exc:
            raise RecordingError(self.path, None, f"cannot read the file header: {exc}") from None
        meta = self._blocks.metadata
        version = meta.get(META_FORMAT)
        if version is None:
            raise RecordingError(self.path, None, "an Avro file, but not a kit recording")
        if version != FORMAT_VERSION:
            raise RecordingError(
                self.path, None, f"recording format {version} is not supported (expected 1)"
            )
        names = {s.get("name") for s in self._blocks.writer_schema if isinstance(s, dict)}
        if RECORD_NAME not in names:
            raise RecordingError(self.path, None, f"its schema has no {RECORD_NAME}")
        try:
            topics = {str(k): int(v) for k, v in json.loads(meta.get(META_TOPICS, "{}")).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise RecordingError(self.path, None, f"bad {META_TOPICS} metadata: {exc}") from None
        return RecordingInfo(
            version,
            meta.get(META_CREATED, ""),
            meta.get(META_SOURCE, ""),
            topics,
            meta.get("avro.codec", "null"),
        )

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._fo.close()

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        index = 0
        blocks: Iterator[Any] = iter(self._blocks)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                return
            except Exception as exc:
                raise self._error(index, "corrupt or truncated block", exc) from None
            data, first = block.bytes_, index
            entries: Iterator[tuple[str, dict[str, Any]]] = iter(block)
            for _ in range(block.num_records):
                try:
                    name, datum = next(entries)
                except Exception as exc:
                    raise self._error(index, "does not match the recording schema", exc) from None
                if name == SCHEMA_ENTRY_NAME:
                    self._add_schema(index, datum)
                    continue
                record = _record(datum)
                partitions = self.info.topics.get(record.topic, 0)
                if not 0 <= record.partition < partitions:
                    raise RecordingError(
                        self.path,
                        index,
                        f"{record.topic}[{record.partition}] is not among the topics in the "
                        f"file header {self.info.topics}",
                    )
                if self.verify_values:
                    self._verify(index, record)
                yield index, record
                index += 1
            rest = len(data.getbuffer()) - data.tell()
            if rest:
                raise RecordingError(
                    self.path,
                    first,
                    f"the block of records {first}..{index - 1} ends with {rest} bytes "
                    "that are no record",
                )

    def _error(self, index: int, what: str, exc: Exception) -> RecordingError:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return RecordingError(self.path, index, f"{what} ({detail})")

    def _add_schema(self, index: int, datum: dict[str, Any]) -> None:
        fp = bytes(datum["fingerprint"])
        try:
            schema = Schema.from_json(datum["schema"], source=f"{self.path} (recording)")
        except (SchemaError, ValueError) as exc:
            raise RecordingError(self.path, index, f"bad writer schema {fp.hex()}: {exc}") from None
        if schema.fingerprint != fp:
            raise RecordingError(
                self.path,
                index,
                f"writer schema {schema.full_name} has fingerprint "
                f"{schema.fingerprint.hex()}, but the file says {fp.hex()}",
            )
        self.schemas[fp] = schema

    def _verify(self, index: int, record: Record) -> None:
        fp = record.fingerprint
        if fp is None:
            return
        schema = self.schemas.get(fp)
        if schema is None:
            self.unverified += 1
            return
        try:
            _CODEC.decode_dict(record.value, schema)
        except DecodeError as exc:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            raise self._error(
                index, f"value of {where} does not match its schema {schema.full_name}", exc
            ) from None


def _record(datum: dict[str, Any]) -> Record:
    headers = datum["headers"]
    return Record(
        datum["topic"],
        datum["partition"],
        datum["offset"],
        datum["timestamp"],
        datum["timestamp_type"],
        datum["key"],
        tuple([(h["name"], h["value"]) for h in headers]) if headers else (),
        datum["value"],
    )


def read_schemas(path: Path | str) -> dict[bytes, Schema]:
    """Every writer schema in a recording, by fingerprint (reads the whole file)."""
    with RecordingReader(path) as reader:
        for _ in reader:
            pass
        return reader.schemas
