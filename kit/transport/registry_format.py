"""The Confluent Schema Registry wire format: subjects, registration, ids, refusals.

With KIT_SCHEMA_REGISTRY_URL set, kit registers its writer schemas with the registry and
frames values as 00 + 4-byte schema id + the Avro body (kit.codec keeps the body's fast
path; only the framing changes). Readers look unknown ids up here. The HTTP is
confluent-kafka's own `SchemaRegistryClient` (the `schema-registry` extra), imported on
first use.

Every call of a `RegistryFormat` blocks on the network: callers on an event loop use
`asyncio.to_thread`. Clients are shared per (url, configuration) within a process, so
every runtime and Client of one process talk to one mock:// store in tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from kit.codec import REGISTRY_HEADER_SIZE, REGISTRY_MAGIC, registry_header, registry_id
from kit.config import Settings, registry_client_config
from kit.errors import ConfigError, DecodeError, SchemaError, SchemaRefused
from kit.schema import Schema

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["RegistryFormat", "TopicRegistrar", "forget_client", "registry_client"]

log = logging.getLogger("kit.registry_format")
T = TypeVar("T")

_INSTALL = "pip install 'kit[schema-registry]'"
_clients: dict[tuple[str, tuple[tuple[str, str], ...]], SchemaRegistryClient] = {}
_clients_lock = threading.Lock()


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """The process's SchemaRegistryClient for these settings (one per url and configuration).

    ConfigError naming KIT_SCHEMA_REGISTRY_URL if the `schema-registry` extra is missing,
    or the configuration is refused by the client.
    """
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:
        raise ConfigError(
            "KIT_SCHEMA_REGISTRY_URL",
            f"the schema registry client is not installed ({exc}): {_INSTALL}",
        ) from None
    conf = registry_client_config(settings)
    key = (str(conf["url"]), tuple(sorted((k, repr(v)) for k, v in conf.items())))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                client = SchemaRegistryClient.new_client(conf)
            except ValueError as exc:
                raise ConfigError("KIT_SCHEMA_REGISTRY_CONFIG", str(exc)) from None
            _clients[key] = client
    return client


def forget_client(url: str | None = None) -> None:
    """Drop (and close) the shared clients of `url`, or all of them: a mock:// store starts
    empty again (for tests)."""
    with _clients_lock:
        gone = [k for k in _clients if url is None or k[0] == url]
        clients = [_clients.pop(k) for k in gone]
    for client in clients:
        client.close()


class RegistryFormat:
    """One service's (or Client's) view of the schema registry: its subject strategy, and
    the ids it registered or looked up (cached for the life of the process's client)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.schema_registry_url or ""
        self.client = registry_client(settings)
        self.strategy = settings.schema_registry_subject_strategy
        self._headers: dict[tuple[str, bytes], bytes] = {}
        self._by_id: dict[int, Schema] = {}
        self._lock = threading.Lock()

    def subject(self, topic: str, schema: Schema) -> str:
        """The subject of `schema` written to `topic`: "<topic>-value" (TopicNameStrategy)
        or the schema's full name (RecordNameStrategy)."""
        return self._subject(topic, schema.full_name)

    def _subject(self, topic: str, full_name: str) -> str:
        return f"{topic}-value" if self.strategy == "topic" else full_name

    def check(self) -> None:
        """Make sure the registry answers (blocking, within about KIT_CONNECT_TIMEOUT).

        ConfigError naming KIT_SCHEMA_REGISTRY_URL if it cannot be reached, or naming
        KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO if it refuses the credentials.
        """
        try:
            if self.url.startswith("mock://"):
                self.client.get_subjects()
            else:
                self.client.get_compatibility()  # GET /config: small, and only a registry has it
        except Exception as exc:
            raise self._failure(exc, "check") from None

    def register(self, schema: Schema, topic: str) -> bytes:
        """Register `schema` under its subject for `topic`; its 5-byte header (blocking).

        Cached per (subject, schema). SchemaRefused if the registry refuses it (409, 422);
        ConfigError if the registry cannot be reached.
        """
        subject = self.subject(topic, schema)
        key = (subject, schema.fingerprint)
        header = self._headers.get(key)
        if header is not None:
            return header
        with self._lock:
            header = self._headers.get(key)
            if header is None:
                header = registry_header(self._register(schema, subject))
                self._headers[key] = header
        self._by_id.setdefault(int.from_bytes(header[1:], "big"), schema)
        return header

    def register_all(self, schemas: Iterable[Schema]) -> dict[bytes, bytes]:
        """Register each record schema under the subject of its event's default topic (its
        full name, where `ctx.publish` sends it); fingerprint -> 5-byte header, for a
        codec's `headers` (blocking). A lone enum or fixed is no event: not registered.
        SchemaRefused or ConfigError as `register`."""
        records = [s for s in schemas if s.definition.get("type") == "record"]
        return {s.fingerprint: self.register(s, s.full_name) for s in records}

    def _register(self, schema: Schema, subject: str) -> int:
        from confluent_kafka.schema_registry import Schema as RegistrySchema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        doing = f"register {schema.full_name} under {subject}"
        try:
            return self.client.register_schema(subject, RegistrySchema(schema.text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422):
                raise self.refusal(schema, subject, exc.error_message) from None
            raise self._failure(exc, doing) from None
        except Exception as exc:
            raise self._failure(exc, doing) from None

    def lookup(self, key: bytes) -> Schema | None:
        """The writer schema of a 5-byte registry writer key (a codec resolver; blocking),
        or None for any other key or an unknown id."""
        schema_id = registry_id(key)
        return None if schema_id is None else self.schema_by_id(schema_id)

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The writer schema with this id (blocking; cached), or None if the registry has
        none. DecodeError if it is not a self-contained Avro schema; ConfigError if the
        registry cannot be asked."""
        found = self._by_id.get(schema_id)
        if found is not None:
            return found
        registered = self._read(
            lambda: self.client.get_schema(schema_id), f"look up schema id {schema_id}"
        )
        if registered is None:
            return None
        if (registered.schema_type or "AVRO") != "AVRO":
            raise DecodeError(f"schema id {schema_id} is a {registered.schema_type} schema")
        if registered.references:
            raise DecodeError(f"schema id {schema_id} has schema references: kit cannot use it")
        try:
            schema = Schema.from_json(registered.schema_str or "", source=f"schema id {schema_id}")
        except SchemaError as exc:
            raise DecodeError(str(exc)) from None
        return self._by_id.setdefault(schema_id, schema)

    def latest(self, full_name: str) -> Schema | None:
        """The latest version of the schema named `full_name` under the subject of its
        default topic (the topic of that name), or None (blocking)."""
        subject = self._subject(full_name, full_name)
        registered = self._read(
            lambda: self.client.get_latest_version(subject),
            f"read the latest version of {subject}",
        )
        if registered is None:
            return None
        return Schema.from_json(registered.schema.schema_str or "", source=subject)

    def _read(self, call: Callable[[], T], doing: str) -> T | None:
        """What a registry read returns; None if the registry has no such thing (404);
        ConfigError for any other failure (blocking)."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return call()
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise self._failure(exc, doing) from None
        except Exception as exc:
            raise self._failure(exc, doing) from None

    def refusal(self, schema: Schema, subject: str, registry_message: str = "") -> SchemaRefused:
        """The SchemaRefused for `schema` under `subject` (blocking): the subject's rule
        (else the global one), the incompatibilities kit finds against the versions the
        rule compares with, and what the registry said."""
        rule = self._rule(subject)
        try:
            diffs = self._diffs(schema, subject, rule)
        except Exception as exc:  # the explanation is best effort; the refusal is not
            log.debug("cannot compare %s with %s: %s", schema.full_name, subject, exc)
            diffs = []
        return SchemaRefused(schema.full_name, subject, rule, diffs, registry_message)

    def _rule(self, subject: str) -> str:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            try:
                return str(self.client.get_compatibility(subject))
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
                return str(self.client.get_compatibility())
        except Exception as exc:
            log.debug("cannot read the compatibility rule of %s: %s", subject, exc)
            return "unknown"

    def _diffs(self, schema: Schema, subject: str, rule: str) -> list[str]:
        """What makes `schema` break `rule` against the subject's versions (by avro)."""
        from avro.schema import parse

        client = self.client
        if rule.endswith("_TRANSITIVE"):
            olds = [client.get_version(subject, v) for v in client.get_versions(subject)]
        else:
            olds = [client.get_latest_version(subject)]
        new = parse(schema.text)
        diffs: list[str] = []
        for registered in olds:
            version = registered.version
            old = parse(registered.schema.schema_str or "")
            if not rule.startswith("FORWARD"):  # BACKWARD, FULL, NONE/unknown: can new read old?
                diffs += _compare(new, old, f"cannot read version {version}")
            if rule.startswith(("FORWARD", "FULL")):
                diffs += _compare(old, new, f"version {version} cannot read it")
        return diffs

    def _failure(self, exc: Exception, doing: str) -> ConfigError:
        """The ConfigError for a registry call that failed other than by a refusal."""
        status = getattr(exc, "http_status_code", None)
        if status == 401:
            return ConfigError(
                "KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
                f"the schema registry at {self.url} refused the credentials ({exc})",
            )
        if status == 403:
            return ConfigError(
                "KIT_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
                f"the schema registry at {self.url} does not allow this account to {doing} ({exc})",
            )
        if status is not None:
            return ConfigError("KIT_SCHEMA_REGISTRY_URL", f"{self.url}: cannot {doing}: {exc}")
        return ConfigError(
            "KIT_SCHEMA_REGISTRY_URL",
            f"schema registry {self.url} unreachable ({type(exc).__name__}: {exc})",
        )

    def close(self) -> None:
        """Forget this view's caches (the shared client stays open for the process)."""
        self._headers.clear()
        self._by_id.clear()


# Any: avro.schema.Schema objects (avro's own types, only compared here)
def _compare(reader: Any, writer: Any, what: str) -> list[str]:
    """avro's compatibility check of reader against writer, as readable lines."""
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(dict.fromkeys(t.value for t in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    detail = "; ".join(sorted(result.messages))
    return [f"{what}: {kinds} at {where} ({detail})"]


class TopicRegistrar:
    """TopicNameStrategy for topics other than an event's default one.

    At start, a runtime registers its writer schemas under their default topic's subject
    ("<full name>-value") and encodes with those ids (an id names a schema, whatever the
    subject). Before the first record of a schema goes to another topic, the sink asks
    `needs(topic, value)` (on the loop: no I/O); if so it raises TopicNotReady, and
    `register(topic)` (in a worker thread, from `prepare`) registers the schema under
    "<topic>-value". A refusal there stops the service loudly, the record's batch not
    committed (kit.runtime): it cannot write what it was asked to.

    Dead-letter topics (`skip`) are never registered under: a dead letter is a copy of the
    record that failed, whoever wrote it, not something this service writes.
    """

    def __init__(
        self, registry: RegistryFormat, own: dict[bytes, Schema], skip: Iterable[str] = ()
    ) -> None:
        self.registry = registry
        self.own = own
        """Registry header -> schema, of what this service registered and writes."""
        self.skip = frozenset(skip)
        """Topics whose subjects are not registered under (the dead-letter topics)."""
        self.ready: set[tuple[str, bytes]] = {(s.full_name, h) for h, s in own.items()}
        """(topic, header) pairs registered under the topic's subject."""
        self._pending: dict[str, set[bytes]] = {}
        self._lock = threading.Lock()

    def needs(self, topic: str, value: bytes | None) -> bool:
        """True if `value` is the first of its schema on `topic`: `register(topic)` first."""
        if value is None or value[:1] != REGISTRY_MAGIC:
            return False
        header = value[:REGISTRY_HEADER_SIZE]
        if (topic, header) in self.ready or header not in self.own or topic in self.skip:
            return False
        with self._lock:
            self._pending.setdefault(topic, set()).add(header)
        return True

    def pending(self, topic: str) -> bool:
        """Whether schemas wait to be registered under `topic`'s subject."""
        return topic in self._pending

    def register(self, topic: str) -> None:
        """Register the schemas waiting for `topic` (blocking). SchemaRefused or
        ConfigError as `RegistryFormat.register`."""
        with self._lock:
            headers = self._pending.pop(topic, set())
        for header in headers:
            self.registry.register(self.own[header], topic)
            self.ready.add((topic, header))
