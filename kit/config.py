"""Settings from the environment (KIT_*), validated at start with the setting's name in errors."""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kit.errors import ConfigError

__all__ = [
    "Settings",
    "ToolSettings",
    "client_config",
    "from_env",
    "known_variables",
    "load_settings",
    "load_tool_settings",
    "registry_client_config",
    "resolve_bootstrap",
    "unknown_variables",
    "warn_unknown_variables",
]

log = logging.getLogger("kit.config")

_PASSTHROUGH_PREFIX = "KIT_KAFKA_"
_NOT_PASSED_THROUGH = frozenset({"KIT_KAFKA_CONFIG", "KIT_KAFKA_VERSION", "KIT_KAFKA_IMAGE"})
"""KIT_KAFKA_* variables that are kit's own settings (ToolSettings), not librdkafka's."""
_READ_ELSEWHERE = frozenset({"KIT_LOG_LEVEL", "KIT_LOG_FORMAT"})
"""KIT_* variables no settings model reads: the kit command reads these two (as its
--log-level and --log-format)."""


class Settings(BaseSettings):
    """Every kit setting; each field is read from the environment variable KIT_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="KIT_", extra="ignore", frozen=True)

    bootstrap_servers: str | None = Field(None, description="Kafka bootstrap address list.")
    client_id: str | None = Field(None, description="client.id sent to the broker.")
    group_id: str | None = Field(None, description="Consumer group; defaults to the service name.")
    topic_partitions: int = Field(3, ge=1, description="Partitions of topics the kit creates.")
    topic_replication: int = Field(
        -1,
        ge=-1,
        description="Replication factor of created topics; -1 (the default) takes the "
        "cluster's default.replication.factor (and so its min.insync.replicas fits).",
    )
    create_topics: bool = Field(True, description="Create missing topics at start.")
    connect_timeout: float = Field(15.0, gt=0, description="Seconds to wait for the broker.")
    shutdown_timeout: float = Field(30.0, gt=0, description="Seconds allowed for graceful stop.")
    retries: int = Field(3, ge=0, description="Retries of a failing handler before dead-letter.")
    retry_backoff: float = Field(0.1, ge=0, description="First retry delay in seconds; doubles.")
    retry_backoff_max: float = Field(5.0, ge=0, description="Longest retry delay in seconds.")
    transient_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a handler failing with a transient error (ServiceUnavailable, "
        "RequestTimeout, DeliveryError) is retried before dead-lettering; 0 counts them "
        "as ordinary failures.",
    )
    dead_letter_suffix: str = Field(".dlt", min_length=1, description="Dead-letter topic suffix.")
    batch_size: int = Field(500, ge=1, le=100_000, description="Records fetched per batch.")
    max_batches_in_flight: int = Field(
        8,
        ge=1,
        le=1_000,
        description="Batches fetched and not yet settled, at most: partitions are handled "
        "concurrently across them (memory: this times KIT_BATCH_SIZE records).",
    )
    delivery_timeout: float = Field(30.0, gt=0, description="Seconds to confirm publishing.")
    schemas_dir: str | None = Field(None, description="Folder of .avsc files.")
    schema_topic: str = Field("_kit_schemas", min_length=1, description="Writer schemas topic.")
    remote_tracebacks: bool = Field(False, description="Send responder tracebacks to callers.")
    linger_ms: float | None = Field(None, ge=0, description="Producer linger; auto if unset.")
    request_timeout: float = Field(10.0, gt=0, description="Default request deadline (s).")
    kafka_config: str | None = Field(None, description="JSON object of extra client settings.")
    exactly_once: bool | None = Field(
        None, description="Process in Kafka transactions; unset: as the Service declares."
    )
    transactional_id: str | None = Field(
        None, description="Transactional id of an exactly-once instance; unset: per host slot."
    )
    schema_registry_url: str | None = Field(
        None,
        description="Schema registry URL (http(s)://..., or mock://<scope> in tests); set: "
        "values are read in both wire formats and written in the Confluent one.",
    )
    schema_registry_subject_strategy: Literal["topic", "record"] = Field(
        "topic",
        description="Subject of a writer schema: topic = '<topic>-value' "
        "(TopicNameStrategy), record = the schema's full name (RecordNameStrategy).",
    )
    schema_registry_write: bool = Field(
        True,
        description="With a registry URL, write the Confluent format; false: read both "
        "formats but write single-object (the first step of a migration).",
    )
    schema_registry_basic_auth_user_info: str | None = Field(
        None, description="Registry basic auth, 'user:password' (basic.auth.user.info)."
    )
    schema_registry_ssl_ca_location: str | None = Field(
        None, description="CA file to verify the registry's certificate (ssl.ca.location)."
    )
    schema_registry_ssl_certificate_location: str | None = Field(
        None, description="Client certificate for the registry (ssl.certificate.location)."
    )
    schema_registry_ssl_key_location: str | None = Field(
        None, description="Client key for the registry (ssl.key.location)."
    )
    schema_registry_ssl_key_password: str | None = Field(
        None, description="Password of the registry client key (ssl.key.password)."
    )
    schema_registry_config: str | None = Field(
        None,
        description="JSON object of other schema registry client settings "
        "(bearer.auth.*, proxy, timeout, ...).",
    )

    tracing: bool | None = Field(
        None,
        description="OpenTelemetry spans (publish, process, receive) for records; unset: on "
        "when opentelemetry-api is installed (the `opentelemetry` extra), off: headers only.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /metrics (Prometheus), /health/live and /health/ready; unset: "
        "off; 0: a free port (tests).",
    )
    metrics_host: str = Field(
        "0.0.0.0", min_length=1, description="Address the metrics and health server binds."
    )
    health_stuck_after: float = Field(
        300.0,
        gt=0,
        description="Seconds a handler call may run (or the event loop not turn) before "
        "/health/live fails.",
    )

    @field_validator("schema_registry_url")
    @classmethod
    def _check_registry_url(cls, url: str | None) -> str | None:
        """Each comma-separated URL is http(s)://... or mock://...; blank is unset."""
        if url is None or not url.strip():
            return None
        for part in url.split(","):
            if not part.strip().startswith(("http://", "https://", "mock://")):
                raise ValueError(f"expected http(s)://... or mock://..., got {part.strip()!r}")
        return url.strip()


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read Settings from `env` (default os.environ); a bad value raises ConfigError."""
    return from_env(Settings, "KIT_", env, overrides)


class ToolSettings(BaseSettings):
    """Settings of kit's tools (the local broker, the test broker, caches), from KIT_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="KIT_", extra="ignore", frozen=True)

    cache_dir: Path | None = Field(
        None, description="kit's cache (Kafka jars, transactional id locks); unset: ~/.cache/kit."
    )
    broker_dir: Path | None = Field(
        None, description="The local broker's data and state; unset: ~/.cache/kit/broker."
    )
    broker_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The local broker's client port; unset: kit.broker.DEFAULT_PORT.",
    )
    kafka_version: str | None = Field(
        None, description="Kafka release the local broker runs; unset: kit.broker.KAFKA_VERSION."
    )
    broker_admin_password: str | None = Field(
        None, description="Super user password of a SASL local broker; unset: generated."
    )
    keep_broker: bool = Field(
        False, description="The tests' broker fixture leaves running a local broker it started."
    )
    kafka_image: str | None = Field(
        None,
        description="The tests' Kafka testcontainer image; unset: kit.testing.broker.KAFKA_IMAGE.",
    )
    schema_registry_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "kit" / "schema-registry",
        description="The local schema registry's files and state; "
        "unset: ~/.cache/kit/schema-registry.",
    )
    schema_registry_port: int = Field(
        8081, ge=1, le=65535, description="The local schema registry's HTTP port."
    )
    apicurio_version: str = Field(
        "3.3.3", description="Apicurio Registry release the local schema registry runs."
    )
    schema_registry_java_home: Path | None = Field(
        None,
        description="JDK (21 or later) that runs the local schema registry; "
        "unset: JAVA_HOME or java on PATH, if 21 or later.",
    )
    keep_schema_registry: bool = Field(
        False,
        description="The tests' schema registry fixture leaves running a registry it started.",
    )

    @property
    def cache_root(self) -> Path:
        """kit's cache folder: cache_dir (``~`` expanded), else ~/.cache/kit."""
        return self.cache_dir.expanduser() if self.cache_dir else Path.home() / ".cache" / "kit"

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: object) -> object:
        """Strip surrounding blanks; a blank value counts as unset."""
        # These variables were read with .strip(), an empty one meaning the default.
        if not isinstance(values, dict):
            return values
        stripped = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
        return {k: v for k, v in stripped.items() if v != ""}


def load_tool_settings(env: Mapping[str, str] | None = None, **overrides: object) -> ToolSettings:
    """Read ToolSettings from `env` (default os.environ); a bad value raises ConfigError."""
    return from_env(ToolSettings, "KIT_", env, overrides)


M = TypeVar("M", bound=BaseModel)


def from_env(
    model: type[M], prefix: str, env: Mapping[str, str] | None, overrides: Mapping[str, object]
) -> M:
    """Build a settings model from PREFIX_<FIELD> variables plus overrides (None = unset).

    A value that does not validate raises ConfigError naming its variable.
    """
    environ = os.environ if env is None else env
    values: dict[str, object] = {}
    for name in model.model_fields:
        key = f"{prefix}{name.upper()}"
        if key in environ:
            values[name] = environ[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(
            f"{prefix}{name.upper()}", f"{err['msg']} (got {err.get('input')!r})"
        ) from None


# Any: librdkafka setting values, from JSON or the environment, as confluent-kafka takes them
def client_config(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """librdkafka settings passed through: KIT_KAFKA_CONFIG (JSON) and KIT_KAFKA_<NAME> vars.

    `KIT_KAFKA_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`.
    """
    environ = os.environ if env is None else env
    config: dict[str, Any] = {}  # Any: as the return type
    if settings.kafka_config:
        try:
            extra = json.loads(settings.kafka_config)
        except ValueError as exc:
            raise ConfigError("KIT_KAFKA_CONFIG", f"not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ConfigError("KIT_KAFKA_CONFIG", "must be a JSON object")
        config.update(extra)
    for key, value in environ.items():
        if key.startswith(_PASSTHROUGH_PREFIX) and key not in _NOT_PASSED_THROUGH:
            config[key[len(_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")] = value
    if settings.client_id:
        config["client.id"] = settings.client_id
    return config


def registry_client_config(settings: Settings) -> dict[str, Any]:  # Any: as the client takes
    """The configuration of confluent-kafka's SchemaRegistryClient from KIT_SCHEMA_REGISTRY_*.

    `url`, the basic auth and SSL settings, then KIT_SCHEMA_REGISTRY_CONFIG (JSON, for
    bearer.auth.*, proxy, ...). Unless that JSON gives them: `timeout` is
    KIT_CONNECT_TIMEOUT, `max.retries` 2 and `retries.wait.ms` 200, so an unreachable
    registry fails within about KIT_CONNECT_TIMEOUT rather than the client's 7 s of retries.
    """
    if not settings.schema_registry_url:
        raise ConfigError("KIT_SCHEMA_REGISTRY_URL", "not set")
    config: dict[str, Any] = {  # Any: as the return type
        "url": settings.schema_registry_url,
        "timeout": settings.connect_timeout,
        "max.retries": 2,
        "retries.wait.ms": 200,
    }
    passed = {
        "basic.auth.user.info": settings.schema_registry_basic_auth_user_info,
        "ssl.ca.location": settings.schema_registry_ssl_ca_location,
        "ssl.certificate.location": settings.schema_registry_ssl_certificate_location,
        "ssl.key.location": settings.schema_registry_ssl_key_location,
        "ssl.key.password": settings.schema_registry_ssl_key_password,
    }
    config.update({k: v for k, v in passed.items() if v is not None})
    if settings.schema_registry_config:
        try:
            extra = json.loads(settings.schema_registry_config)
        except ValueError as exc:
            raise ConfigError("KIT_SCHEMA_REGISTRY_CONFIG", f"not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ConfigError("KIT_SCHEMA_REGISTRY_CONFIG", "must be a JSON object")
        config.update(extra)
    return config


class _LocalBroker:
    """Where to find a local broker when KIT_BOOTSTRAP_SERVERS is unset: nowhere here; the
    package (kit/__init__.py, the composition root) installs kit.broker.local's lookup, so
    this bottom layer imports nothing above it."""

    def __init__(self) -> None:
        self.address: Callable[[], str | None] = lambda: None


_local_broker = _LocalBroker()


def install_local_broker(address: Callable[[], str | None]) -> None:
    """Set how resolve_bootstrap finds a running local broker (called by kit/__init__)."""
    _local_broker.address = address


def resolve_bootstrap(settings: Settings) -> tuple[str, str]:
    """The bootstrap address and where it came from: the environment or the local broker."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers, "KIT_BOOTSTRAP_SERVERS"
    address = _local_broker.address()
    if address:
        return address, "the local broker (kit broker start)"
    raise ConfigError(
        "KIT_BOOTSTRAP_SERVERS",
        "not set and no local broker is running; set it or run `kit broker start`",
    )


def known_variables() -> frozenset[str]:
    """Every KIT_* variable kit reads, but for the KIT_KAFKA_* pass-through.

    That is each field of every settings model kit defines with a ``KIT_`` prefix (found
    among pydantic's BaseSettings subclasses in kit's modules: Settings and ToolSettings
    here, kit.registry's RegistryConfig, which this layer cannot import), plus
    KIT_LOG_LEVEL and KIT_LOG_FORMAT.
    """
    names = set(_READ_ELSEWHERE)
    todo: list[type[BaseSettings]] = [BaseSettings]
    while todo:
        for model in todo.pop().__subclasses__():
            todo.append(model)
            prefix = str(model.model_config.get("env_prefix") or "")
            if model.__module__.split(".")[0] == "kit" and prefix.startswith("KIT_"):
                names.update(f"{prefix}{field}".upper() for field in model.model_fields)
    return frozenset(names)


def unknown_variables(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The KIT_* variables of `env` (default os.environ) that kit does not read, by name,
    each with the closest known name (difflib), or None if none is close. KIT_KAFKA_*
    variables are librdkafka settings: never unknown here."""
    environ = os.environ if env is None else env
    known = known_variables()
    unknown: dict[str, str | None] = {}
    for name in sorted(environ):
        if name.startswith("KIT_") and not name.startswith(_PASSTHROUGH_PREFIX):
            if name not in known:
                closest = difflib.get_close_matches(name, known, n=1)
                unknown[name] = closest[0] if closest else None
    return unknown


class _Warned:
    """The unknown variables already warned about in this process."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()


_warned = _Warned()


def warn_unknown_variables(env: Mapping[str, str] | None = None) -> None:
    """Log a warning on ``kit.config`` for each unknown KIT_* variable (unknown_variables),
    naming the closest known one; each name once per process.

    Called where a kit process starts (``kit run``, Client, check_reachable, which every
    runtime start runs), not by load_settings, which programs call as often as they like.
    """
    for name, closest in unknown_variables(env).items():
        with _warned.lock:
            if name in _warned.names:
                continue
            _warned.names.add(name)
        hint = f" (did you mean {closest}?)" if closest else ""
        log.warning("unknown setting %s%s: kit ignores it", name, hint)


def forget_warned_variables() -> None:
    """Warn again about names already warned about (for tests)."""
    with _warned.lock:
        _warned.names.clear()
