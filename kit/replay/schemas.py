"""The writer schemas of a recording: finding them while recording (SchemaFinder), and giving
registry-framed values the target registry's ids on replay (Reframer).

A registry id means nothing on another cluster's registry, so a recording never holds a bare
id: the recorder writes the schema (a WriterSchema entry) and a SchemaId entry naming it
before the first value with that id, and replay registers that schema with the target
registry and rewrites the 4 id bytes of each value. The Avro body is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from kit.codec import REGISTRY_MAGIC, fingerprint_of, registry_id
from kit.config import Settings
from kit.errors import ConfigError, DecodeError
from kit.replay.writer import RecordingWriter
from kit.schema import Schema, SchemaRepository
from kit.transport.registry_format import RegistryFormat
from kit.transport.schema_topic import SchemaTopic

__all__ = ["Reframer", "SchemaFinder", "public_url", "target_registry"]

log = logging.getLogger("kit.replay")


def public_url(url: str) -> str:
    """`url` without user and password, as a recording may show it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


class SchemaFinder:
    """Find the writer schema of each new fingerprint or registry id, and put it in the file
    before the first record that needs it.

    Fingerprints are looked up in the local repository, then on the schema topic; ids in
    the schema registry (`registry`). A registry-framed value with no registry configured is
    a ConfigError naming KIT_SCHEMA_REGISTRY_URL: the file would hold ids without schemas.
    """

    def __init__(
        self,
        writer: RecordingWriter,
        repository: SchemaRepository,
        topic: SchemaTopic | None,
        registry: RegistryFormat | None = None,
    ) -> None:
        self.writer = writer
        self.repository = repository
        self.topic = topic
        self.registry = registry
        self.found: set[bytes] = set()
        self.missing: set[bytes] = set()
        self.missing_ids: set[int] = set()

    def see(self, value: bytes, where: str = "") -> None:
        """Make sure the file holds the writer schema of `value` (from record `where`)."""
        schema_id = registry_id(value[:5])
        if schema_id is not None:
            self._see_id(schema_id, where)
            return
        fp = fingerprint_of(value)
        if fp is None or fp in self.found or fp in self.missing:
            return
        schema = self._lookup(fp)
        if schema is None:
            self.missing.add(fp)
            return
        self.writer.add_schema(schema)
        self.found.add(fp)

    def _see_id(self, schema_id: int, where: str) -> None:
        if self.writer.has_schema_id(schema_id) or schema_id in self.missing_ids:
            return
        if self.registry is None:
            raise ConfigError(
                "KIT_SCHEMA_REGISTRY_URL",
                f"{where or 'a value'} is registry-framed (schema id {schema_id}): set it to "
                "the schema registry these values were written with, so that the recording "
                "carries their schemas (an id alone means nothing to another registry)",
            )
        try:
            schema = self.registry.schema_by_id(schema_id)
        except DecodeError as exc:  # Protobuf, JSON Schema, Avro with references: kept as bytes
            self.missing_ids.add(schema_id)
            log.warning(
                "schema id %d cannot be recorded (%s); its values are kept as bytes", schema_id, exc
            )
            return
        if schema is None:
            self.missing_ids.add(schema_id)
            log.warning("the schema registry has no schema id %d", schema_id)
            return
        self.writer.add_schema_id(schema_id, schema, public_url(self.registry.url))
        self.found.add(schema.fingerprint)

    def _lookup(self, fp: bytes) -> Schema | None:
        schema = self.repository.by_fingerprint(fp)
        if schema is None and self.topic is not None:
            schema = self.topic.lookup(fp)
        return schema

    def finish(self) -> list[bytes]:
        """Look the missing ones up once more (they go at the end); return those still unknown."""
        if self.missing and self.topic is not None:
            self.topic.refresh()
        for fp in list(self.missing):
            schema = self._lookup(fp)
            if schema is not None:
                self.writer.add_schema(schema)
                self.found.add(fp)
                self.missing.discard(fp)
        if self.missing:
            log.warning(
                "no writer schema found for fingerprint(s) %s; their values are kept as bytes",
                ", ".join(sorted(fp.hex() for fp in self.missing)),
            )
        return sorted(self.missing)


def target_registry(settings: Settings, registry: str | None, path: object) -> RegistryFormat:
    """The schema registry a format 2 recording (`path`) is replayed into: `registry`, else
    KIT_SCHEMA_REGISTRY_URL; ConfigError naming that setting if neither is set."""
    if registry:
        settings = settings.model_copy(update={"schema_registry_url": registry})
    if not settings.schema_registry_url:
        raise ConfigError(
            "KIT_SCHEMA_REGISTRY_URL",
            f"{path} holds registry-framed values (recording format 2): set it (or give "
            "--registry URL) to the target cluster's schema registry, where their schemas "
            "are registered and their ids rewritten",
        )
    return RegistryFormat(settings)


class Reframer:
    """Give registry-framed values the target registry's ids.

    `schemas` are the recording's (RecordingReader.schemas, which fills in as the file is
    read: a SchemaId entry comes before the values with its id). Each recorded schema is
    registered once per target topic, under the target subject (after --topic-map). A value
    whose first 5 bytes are no recorded id is published as recorded.
    """

    def __init__(self, schemas: Mapping[bytes, Schema], registry: RegistryFormat) -> None:
        self.schemas = schemas
        self.registry = registry
        self.headers: dict[tuple[str, bytes], bytes] = {}
        self.reframed = 0
        """How many values got a target id."""

    def value(self, topic: str, value: bytes | None) -> bytes | None:
        """`value` as published to the target `topic`: the target's id for a recorded one."""
        if value is None or value[:1] != REGISTRY_MAGIC:
            return value
        key = bytes(value[:5])
        header = self.headers.get((topic, key))
        if header is None:
            schema = self.schemas.get(key)
            if schema is None:
                return value
            header = self.registry.register(schema, topic)
            self.headers[(topic, key)] = header
        self.reframed += 1
        return header + value[5:]

    @property
    def ids(self) -> dict[int, int]:
        """Each recorded schema id replayed, to the target registry's id (the last, if a
        schema got several ids under several subjects)."""
        return {
            int.from_bytes(src[1:], "big"): int.from_bytes(dst[1:], "big")
            for (_topic, src), dst in self.headers.items()
        }
