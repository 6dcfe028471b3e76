"""Wire formats, via fastavro: Avro single-object encoding (C3 01, CRC-64-AVRO fingerprint,
body), kit's own, and the Confluent Schema Registry format (00, 4-byte big-endian schema id,
body). The body is the same Avro binary in both; decode tells them apart by the first byte.

Writer schemas are found by a *writer key*: the 8-byte fingerprint of a single-object value,
or the 5-byte header (00 + id) of a registry-framed one, so the two never collide."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from io import BytesIO
from typing import Any, TypeVar

from fastavro import schemaless_reader, schemaless_writer
from pydantic import ValidationError

from kit.binding import encode_check, explain
from kit.errors import DecodeError, EncodeError
from kit.event import Event
from kit.schema import Schema, SchemaRepository

__all__ = [
    "MAGIC",
    "REGISTRY_MAGIC",
    "Codec",
    "UnknownWriterSchema",
    "fingerprint_of",
    "registry_header",
    "registry_id",
    "writer_key",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10
REGISTRY_MAGIC = b"\x00"
"""The first byte of a value in the Confluent Schema Registry wire format (its V0 framing)."""
REGISTRY_HEADER_SIZE = 5
"""00 and a 4-byte big-endian schema id."""
E = TypeVar("E", bound=Event)
SchemaResolver = Callable[[bytes], Schema | None]
AsyncSchemaResolver = Callable[[bytes], Awaitable[Schema | None]]


class UnknownWriterSchema(DecodeError):
    """The writer schema of a record is not known (yet): not cached, not in the repository,
    and not found by the codec's sync resolver (if it has one).

    On the event loop, `await codec.resolve(exc.fingerprint)` and decode again if it
    returns True; dead-letter the record only if it returns False.
    """

    def __init__(self, fingerprint: bytes, reader: str | None = None) -> None:
        self.fingerprint = fingerprint
        """The writer key of the unknown schema: its 8-byte CRC-64-AVRO fingerprint, or the
        5-byte registry header (00 + schema id) of a registry-framed value."""
        self.reader = reader
        """The full name of the reader schema, if the record was decoded against one."""
        where = f" for {reader}" if reader else ""
        super().__init__(f"unknown writer schema ({describe_key(fingerprint)}){where}")


def describe_key(key: bytes) -> str:
    """A writer key for people: "fingerprint 0123..." or "schema id 42"."""
    schema_id = registry_id(key)
    return f"fingerprint {key.hex()}" if schema_id is None else f"schema id {schema_id}"


def registry_id(key: bytes) -> int | None:
    """The schema id of a 5-byte registry writer key (or of a registry-framed value's
    first 5 bytes), or None for anything else."""
    if len(key) == REGISTRY_HEADER_SIZE and key[:1] == REGISTRY_MAGIC:
        return int.from_bytes(key[1:], "big")
    return None


def registry_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header of values written with this schema id."""
    return REGISTRY_MAGIC + schema_id.to_bytes(4, "big")


def writer_key(data: bytes | None) -> bytes:
    """The writer key of an encoded value: the 8-byte fingerprint of a single-object value
    (C3 01), the 5-byte header of a registry-framed one (00 + id). DecodeError otherwise."""
    return _fingerprint(data)


def fingerprint_of(data: bytes) -> bytes | None:
    """The writer schema fingerprint of an encoded value, or None if it is not single-object."""
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        return None
    return bytes(data[2:HEADER_SIZE])


def _encode_error(schema: Schema, datum: object, exc: Exception) -> EncodeError:
    """The EncodeError for a failed encode: where the value that does not fit is, if found."""
    where = explain(schema, datum)
    return EncodeError(f"cannot encode {schema.full_name}: {where or exc}")


def _fingerprint(data: bytes | None) -> bytes:
    """The writer key of a value (see `writer_key`); DecodeError if it has neither framing."""
    if data is None:
        raise DecodeError("value is null (a tombstone), not an event")
    if data[:2] == MAGIC and len(data) >= HEADER_SIZE:
        return bytes(data[2:HEADER_SIZE])
    first = data[:1]
    if first == REGISTRY_MAGIC and len(data) >= REGISTRY_HEADER_SIZE:
        return bytes(data[:REGISTRY_HEADER_SIZE])
    if first == b"\x01":
        raise DecodeError(
            "Confluent GUID framing (magic 1) is not supported: only schema ids (magic 0)"
        )
    head = bytes(data[:4]).hex(" ")
    raise DecodeError(
        "not Avro single-object encoding nor the schema registry format: expected magic "
        f"c3 01 (then an 8-byte fingerprint) or 00 (then a 4-byte schema id), got "
        f"{head or 'no bytes'}"
    )


def _no_registry(key: bytes) -> DecodeError:
    return DecodeError(
        f"registry-framed value ({describe_key(key)}) but KIT_SCHEMA_REGISTRY_URL is not set"
    )


class Codec:
    """Encode events to bytes and decode bytes to events, resolving writer schemas.

    Writer schemas are found by fingerprint in the repository, then through `resolver`
    (the Kafka schema topic), so readers built against another version of a schema decode
    through Avro schema resolution.

    `resolver` is called inside decode and may block (`SchemaTopic.lookup`). A codec with
    only an `async_resolver` (`SchemaTopic.lookup_async`) never blocks: decode raises
    UnknownWriterSchema for a fingerprint it does not know, and the caller awaits
    `resolve(fp)`, then decodes again.

    Both wire formats are read (told apart by the first byte). Resolvers get the writer key:
    an 8-byte fingerprint, or the 5-byte header of a registry-framed value (only when
    `registry` is true: without a registry such a value is a DecodeError naming
    KIT_SCHEMA_REGISTRY_URL). With `headers` (fingerprint -> 5-byte header, from
    registering the schemas), encode writes the registry format; a schema missing from it
    is an EncodeError.
    """

    def __init__(
        self,
        repository: SchemaRepository | None = None,
        resolver: SchemaResolver | None = None,
        async_resolver: AsyncSchemaResolver | None = None,
        headers: Mapping[bytes, bytes] | None = None,
        *,
        registry: bool = False,
    ) -> None:
        self.repository = repository if repository is not None else SchemaRepository()
        self.resolver = resolver
        self.async_resolver = async_resolver
        self.headers: Mapping[bytes, bytes] | None = None
        """Fingerprint -> registry header: encode in the registry format (None: single-object).
        Set it with `set_headers`, which makes its schemas known writers too."""
        self.registry = registry or headers is not None
        """A schema registry resolves registry-framed values' ids (through the resolvers)."""
        self._writers: dict[bytes, Schema] = {}
        if headers is not None:
            self.set_headers(headers)

    def set_headers(self, headers: Mapping[bytes, bytes]) -> None:
        """Write the registry format with these headers (fingerprint -> 5-byte header, from
        registering the schemas), and read them: each header is the writer key of the
        repository's schema of that fingerprint, so the codec decodes what it wrote with no
        resolver. The mapping is kept as it is (a caller may add to it: add the schema's
        writer key with `add_writer` then)."""
        self.headers = headers
        self.registry = True
        for fp, header in headers.items():
            schema = self.repository.by_fingerprint(fp)
            if schema is not None:
                self._writers[header] = schema

    def with_resolver(self, resolver: SchemaResolver) -> Codec:
        """This codec (repository, headers, async resolver) with a sync `resolver` too, for
        decoding off the event loop: it may block. The two share their known writers."""
        other = Codec(self.repository, resolver, self.async_resolver, registry=self.registry)
        other.headers = self.headers
        other._writers = self._writers
        return other

    def add_writer(self, key: bytes, schema: Schema) -> None:
        """Know `schema` as the writer schema of values with this writer key (a fingerprint,
        or a 5-byte registry header), e.g. from a recording or a registration."""
        self._writers[key] = schema

    def _unknown(self, key: bytes, reader: str | None = None) -> DecodeError:
        """UnknownWriterSchema, or, for a registry key with no registry, why not."""
        if not self.registry and registry_id(key) is not None:
            return _no_registry(key)
        return UnknownWriterSchema(key, reader)

    def _header(self, schema: Schema) -> bytes:
        """The registry header of a schema (headers is set); EncodeError if it has none."""
        assert self.headers is not None
        header = self.headers.get(schema.fingerprint)
        if header is None:
            raise EncodeError(f"{schema.full_name} is not registered with the schema registry")
        return header

    def encode(self, event: Event) -> bytes:
        """Encode an event with its class's schema, in single-object encoding (or in the
        registry format, with `headers`).

        EncodeError names the JSON path of the value that does not fit, e.g. an int out of
        32 bits or a naive datetime in a timestamp (kit.binding.encode_check).
        """
        schema = type(event).__kit_schema__
        if schema is None:
            raise EncodeError(f"{type(event).__qualname__} is not bound to a schema")
        cls = type(event)
        buf = BytesIO()
        buf.write(cls.__kit_header__ if self.headers is None else self._header(schema))
        data = event.__dict__ if cls.__kit_flat__ else event.model_dump(by_alias=True)
        try:
            if cls.__kit_check__ is not None:
                cls.__kit_check__(data)
            schemaless_writer(buf, schema.parsed, data)
        except Exception as exc:
            raise _encode_error(schema, data, exc) from exc
        return buf.getvalue()

    def encode_datum(self, schema: Schema, datum: object) -> bytes:
        """Encode plain data (dicts, lists, scalars) with `schema`, in single-object encoding
        (or in the registry format, with `headers`)."""
        buf = BytesIO()
        buf.write(MAGIC + schema.fingerprint if self.headers is None else self._header(schema))
        check = encode_check(schema)
        try:
            if check is not None:
                check(datum)
            schemaless_writer(buf, schema.parsed, datum)
        except Exception as exc:
            raise _encode_error(schema, datum, exc) from exc
        return buf.getvalue()

    def decode_any(self, data: bytes | None) -> dict[str, Any]:  # Any: Avro data
        """Decode bytes to plain data with their own writer schema (no reader schema)."""
        fp = _fingerprint(data)
        writer = self.writer_schema(fp)
        if writer is None:
            raise self._unknown(fp)
        return self.decode_dict(data, writer)

    def writer_schema(self, fp: bytes) -> Schema | None:
        """The writer schema with this writer key (fingerprint or registry header), from the
        cache, repository or resolver."""
        schema = self._writers.get(fp)
        if schema is not None:
            return schema
        if not self.registry and registry_id(fp) is not None:
            return None
        schema = self.repository.by_fingerprint(fp)
        if schema is None and self.resolver is not None:
            schema = self.resolver(fp)
        if schema is not None:
            self._writers[fp] = schema
        return schema

    async def resolve(self, fp: bytes) -> bool:
        """Find the writer schema with this writer key without blocking the event loop.

        Asks `async_resolver`, else runs the sync `resolver` in a worker thread, and caches
        what it finds. True if the schema is now known (decode again), False if not (the
        record's writer schema is on no schema topic: dead-letter it). Errors of the
        resolver (e.g. BrokerError: the schema topic could not be read) propagate.
        """
        if self._writers.get(fp) is not None:
            return True
        if not self.registry and registry_id(fp) is not None:
            return False
        schema = self.repository.by_fingerprint(fp)
        if schema is None and self.async_resolver is not None:
            schema = await self.async_resolver(fp)
        elif schema is None and self.resolver is not None:
            schema = await asyncio.to_thread(self.resolver, fp)
        if schema is None:
            return False
        self._writers[fp] = schema
        return True

    def decode_dict(self, data: bytes | None, reader: Schema) -> dict[str, Any]:  # Any: Avro data
        """Decode bytes to a plain dict in the reader schema's shape."""
        fp = _fingerprint(data)
        assert data is not None
        writer = (
            reader if fp == reader.fingerprint else self._writers.get(fp) or self.writer_schema(fp)
        )
        if writer is None:
            raise self._unknown(fp, reader.full_name)
        body = BytesIO(data)
        body.seek(HEADER_SIZE if len(fp) == 8 else REGISTRY_HEADER_SIZE)
        try:
            if writer.fingerprint == reader.fingerprint:
                value = schemaless_reader(body, writer.parsed, None)
            else:
                value = schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:
            raise DecodeError(
                f"cannot decode {writer.full_name} as {reader.full_name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise DecodeError(
                f"{len(data) - body.tell()} unexpected trailing bytes after a {writer.full_name}"
            )
        if not isinstance(value, dict):
            raise DecodeError(f"{writer.full_name} did not decode to a record")
        return value

    def decode(self, data: bytes | None, model: type[E]) -> E:
        """Decode bytes into an instance of `model`, validating it."""
        reader = model.__kit_schema__
        if reader is None:
            raise DecodeError(f"{model.__qualname__} is not bound to a schema")
        value = self.decode_dict(data, reader)
        try:
            return model.__pydantic_validator__.validate_python(value)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise DecodeError(f"{reader.full_name} failed validation: {exc}") from exc
