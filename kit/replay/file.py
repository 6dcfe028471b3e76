"""Read recordings: Avro container files of Kafka records and their writer schemas.

The file's types (Record, RecordingError) are in kit.replay.format, and RecordingWriter in
kit.replay.writer; all three are importable from here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import fastavro

from kit.codec import Codec, registry_header
from kit.errors import DecodeError, SchemaError
from kit.replay.format import (
    FORMAT_VERSIONS,
    META_CREATED,
    META_FORMAT,
    META_SOURCE,
    META_TOPICS,
    OCF_MAGIC,
    RECORD_NAME,
    SCHEMA_ENTRY_NAME,
    SCHEMA_ID_ENTRY_NAME,
    Record,
    RecordingError,
    RecordingInfo,
)
from kit.replay.writer import RecordingWriter
from kit.schema import Schema

__all__ = [
    "Record",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "read_schemas",
]

# Any: every Any here is Avro data, or a fastavro object its stubs do not describe (a Block's
# bytes_, the (branch name, datum) tuples of return_record_name).


class RecordingReader:
    """Read a recording: iterate `(index, Record)`; `schemas` fills in as entries are read.

    `schemas` maps each writer key to its schema: the 8-byte fingerprint of every
    WriterSchema entry, and the 5-byte registry header (00 + id) of every SchemaId entry
    (`schema_ids` maps those ids to fingerprints), so a Codec decodes both framings with
    them and no registry. Anything wrong with the file raises RecordingError naming the
    file and the index of the first record that could not be read. With `verify_values`,
    each Avro value is also decoded with its writer schema from the file.
    """

    def __init__(self, path: Path | str, *, verify_values: bool = False) -> None:
        self.path = Path(path)
        self.verify_values = verify_values
        self.schemas: dict[bytes, Schema] = {}
        self.schema_ids: dict[int, bytes] = {}
        self.unverified = 0
        self._codec = Codec()  # verifies recorded values against their writer schemas
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
        if version not in FORMAT_VERSIONS:
            raise RecordingError(
                self.path,
                None,
                f"recording format {version} is not supported (this kit reads "
                f"{' and '.join(FORMAT_VERSIONS)}: a newer kit wrote it?)",
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
                if name == SCHEMA_ID_ENTRY_NAME:
                    self._add_schema_id(index, datum)
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

    def _add_schema_id(self, index: int, datum: dict[str, Any]) -> None:
        schema_id, fp = datum["id"], bytes(datum["fingerprint"])
        if self.info.format_version == "1":
            raise RecordingError(self.path, index, "a SchemaId entry in a format 1 file")
        schema = self.schemas.get(fp)
        if schema is None:
            raise RecordingError(
                self.path,
                index,
                f"schema id {schema_id} names fingerprint {fp.hex()}, "
                "whose writer schema is not in the file before it",
            )
        known = self.schema_ids.get(schema_id)
        if known is not None and known != fp:
            raise RecordingError(
                self.path,
                index,
                f"schema id {schema_id} is fingerprint {known.hex()} and {fp.hex()}",
            )
        self.schema_ids[schema_id] = fp
        self.schemas[registry_header(schema_id)] = schema
        self._codec.add_writer(registry_header(schema_id), schema)

    def _verify(self, index: int, record: Record) -> None:
        schema_id = record.schema_id
        key = registry_header(schema_id) if schema_id is not None else record.fingerprint
        if key is None:
            return
        schema = self.schemas.get(key)
        if schema is None:
            # a value starting with 00 in a file without registry ids is not taken for one
            self.unverified += schema_id is None or bool(self.schema_ids)
            return
        try:
            self._codec.decode_dict(record.value, schema)
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
    """Every writer schema in a recording, by writer key: fingerprint, and the 5-byte
    header of each registry id (reads the whole file)."""
    with RecordingReader(path) as reader:
        for _ in reader:
            pass
        return reader.schemas
