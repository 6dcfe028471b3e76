"""Turn librdkafka's connect, authentication and authorization failures into one clear line.

librdkafka retries every connection problem forever and reports it in log lines (to stderr,
hundreds a minute) and through ``error_cb``. A wrong password thus looked like a broker
that never answered. This module reads those reports instead:

- :class:`ErrorCollector` is an ``error_cb`` plus a ``logger`` for one client: it keeps the
  errors (``_AUTHENTICATION``, ``_TRANSPORT``, ``_ALL_BROKERS_DOWN``, ...) and the raw log
  lines, so nothing reaches the terminal, and :meth:`ErrorCollector.diagnosis` names the
  setting to fix;
- :func:`wait_until_reachable` (what ``check_reachable`` runs) connects with such a client
  and fails at the first authentication or protocol failure, not after the whole timeout;
- :func:`authorization_message` / :func:`authorization_error` turn a
  ``TOPIC_AUTHORIZATION_FAILED``, ``GROUP_AUTHORIZATION_FAILED``,
  ``CLUSTER_AUTHORIZATION_FAILED`` or ``TRANSACTIONAL_ID_AUTHORIZATION_FAILED`` error into a
  line naming the resource and the principal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from kit.config import Settings
from kit.errors import ConfigError

__all__ = [
    "ErrorCollector",
    "authorization_error",
    "authorization_message",
    "principal_of",
    "setting_name",
    "wait_until_reachable",
]

log = logging.getLogger("kit.kafka")

_ADDRESS = re.compile(r"^(?:[a-z_]+://)?(?P<address>[^/\s]+)/[^:\s]+: (?P<reason>.*)$", re.S)
_SUPPORTED = re.compile(r"broker's supported mechanisms: ?(?P<mechanisms>[^()]*?)\s*(?:\(|$)")
_EARLY_CLOSE = re.compile(r"Disconnected.*\(after (?P<ms>\d+)ms in state UP")
_EARLY_CLOSES = 3  # a PLAINTEXT client on a SASL/SSL listener: closed right after each connect
_AUTHZ_KINDS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
}
_OPERATIONS = {  # what each action needs on its resource, for the hint
    ("topic", "produce"): "WRITE",
    ("topic", "consume"): "READ",
    ("topic", "create"): "CREATE (or DESCRIBE, if it exists)",
    ("topic", "describe"): "DESCRIBE",
    ("group", "consume"): "READ",
    ("group", "commit"): "READ",
    ("cluster", "create"): "CREATE",
    ("transactional id", "produce"): "WRITE",
}


def setting_name(
    key: str, settings: Settings | None = None, env: Mapping[str, str] | None = None
) -> str:
    """The kit setting that gives librdkafka setting ``key`` (``sasl.password`` →
    ``KIT_KAFKA_SASL_PASSWORD``, or ``KIT_KAFKA_CONFIG (sasl.password)`` if only that JSON
    sets it)."""
    environ = os.environ if env is None else env
    variable = "KIT_KAFKA_" + key.upper().replace(".", "_")
    if variable not in environ and settings is not None and settings.kafka_config:
        try:
            extra = json.loads(settings.kafka_config)
        except ValueError:
            extra = {}
        if isinstance(extra, dict) and key in extra:
            return f"KIT_KAFKA_CONFIG ({key})"
    return variable


def principal_of(config: Mapping[str, object]) -> str:
    """The principal a client with librdkafka settings ``config`` most likely has."""
    protocol = str(config.get("security.protocol", "plaintext")).upper()
    mechanism = str(config.get("sasl.mechanism", config.get("sasl.mechanisms", "GSSAPI")))
    if protocol.startswith("SASL"):
        if mechanism.upper() in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            return f"User:{config.get('sasl.username', '')}"
        if mechanism.upper() == "GSSAPI" and config.get("sasl.kerberos.principal"):
            return f"User:{config['sasl.kerberos.principal']}"
        return f"this client's {mechanism} principal"
    if protocol == "SSL":
        return "this client's SSL certificate principal"
    return "User:ANONYMOUS"


class ErrorCollector:
    """``error_cb`` and ``logger`` of one client: keeps what librdkafka reports, prints nothing.

    Pass :meth:`hooks` into the client's config. confluent-kafka serves both from ``poll()``
    (``AdminClient.poll`` too), on the polling thread; :meth:`diagnosis` reads what arrived.
    """

    def __init__(self, settings: Settings | None = None, env: Mapping[str, str] | None = None):
        self.settings = settings
        self.env = env
        self.errors: list[KafkaError] = []
        self.log_lines: list[str] = []
        self.logger = logging.Logger("kit.kafka.librdkafka")  # standalone: no propagation
        self.logger.addHandler(_Lines(self.log_lines))

    def __call__(self, error: KafkaError) -> None:
        """The ``error_cb``."""
        self.errors.append(error)

    def hooks(self) -> dict[str, Any]:  # Any: client config values (a callback, a logger)
        """``{"error_cb": ..., "logger": ...}`` to add to a client's config."""
        return {"error_cb": self, "logger": self.logger}

    def last_transport(self) -> str | None:
        """The reason of the latest connection error (``_TRANSPORT`` etc.), if any."""
        for error in reversed(self.errors):
            if error.code() != KafkaError._ALL_BROKERS_DOWN:
                return _split(error.str(), "")[1]
        return None

    def diagnosis(self, config: Mapping[str, object], bootstrap: str) -> ConfigError | None:
        """A ConfigError naming the setting to fix, if the reports so far show an
        authentication failure or a security-protocol / SASL-mechanism mismatch; None while
        they show nothing a retry could not cure (broker down, still starting)."""
        for error in self.errors:
            found = _diagnose_error(error, config, bootstrap, self.settings, self.env)
            if found is not None:
                return found
        closes = [line for line in self.log_lines if _EARLY_CLOSE.search(line)]
        protocol = str(config.get("security.protocol", "plaintext")).upper()
        if len(closes) >= _EARLY_CLOSES and protocol == "PLAINTEXT":
            address = _address_in(closes[-1]) or bootstrap
            name = self._name("security.protocol")
            return ConfigError(
                name,
                f"the broker at {address} closed each connection right after it opened "
                f"(security.protocol={protocol}): its listener probably requires SASL or SSL; "
                f"check {name} (e.g. SASL_PLAINTEXT) and {self._name('sasl.mechanism')}",
            )
        return None

    def _name(self, key: str) -> str:
        return setting_name(key, self.settings, self.env)


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _split(text: str, default: str) -> tuple[str, str]:
    match = _ADDRESS.match(text)
    return (match["address"], match["reason"]) if match else (default, text)


def _address_in(line: str) -> str | None:
    match = re.search(r"\]: (?:[a-z_]+://)?([^/\s]+)/[^:\s]+: ", line)
    return match.group(1) if match else None


def _diagnose_error(
    error: KafkaError,
    config: Mapping[str, object],
    bootstrap: str,
    settings: Settings | None,
    env: Mapping[str, str] | None,
) -> ConfigError | None:
    address, reason = _split(error.str(), bootstrap)
    protocol = str(config.get("security.protocol", "plaintext")).upper()
    mechanism = str(config.get("sasl.mechanism", config.get("sasl.mechanisms", "GSSAPI")))
    user = config.get("sasl.username")

    def name(key: str) -> str:
        return setting_name(key, settings, env)

    code = error.code()
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        supported = _SUPPORTED.search(reason)
        if "Request not valid in current SASL state" in reason or (
            supported is not None and not supported["mechanisms"].strip()
        ):
            return ConfigError(
                name("security.protocol"),
                f"the listener at {address} does not take SASL (security.protocol={protocol}); "
                f"it looks like a PLAINTEXT listener: check {name('security.protocol')} and "
                f"{name('sasl.mechanism')}",
            )
        if "Unsupported SASL mechanism" in reason:
            offered = supported["mechanisms"].strip() if supported else "others"
            return ConfigError(
                name("sasl.mechanism"),
                f"the broker at {address} does not take SASL mechanism {mechanism} "
                f"(it takes {offered}): check {name('sasl.mechanism')}",
            )
        if "invalid credentials" in reason or "Authentication failed" in reason:
            who = f" as user {user!r}" if user is not None else ""
            return ConfigError(
                name("sasl.password"),
                f"SASL authentication failed at {address}{who} ({mechanism}): "
                f"check {name('sasl.username')} / {name('sasl.password')}",
            )
        return ConfigError(
            name("security.protocol"),
            f"authentication failed at {address} (security.protocol={protocol}, "
            f"mechanism {mechanism}): {reason}",
        )
    if code == KafkaError._SSL or (
        code == KafkaError._TRANSPORT
        and ("SSL handshake failed" in reason or "incorrect security.protocol" in reason)
    ):
        return ConfigError(
            name("security.protocol"),
            f"{reason.rsplit(' (after ', 1)[0]} at {address} (security.protocol={protocol}): "
            f"check {name('security.protocol')} and the KIT_KAFKA_SSL_* settings",
        )
    return None


def wait_until_reachable(
    config: Mapping[str, Any],  # Any: librdkafka setting values, as AdminClient takes them
    timeout: float,
    *,
    settings: Settings | None = None,
    bootstrap: str | None = None,
    source: str = "KIT_BOOTSTRAP_SERVERS",
    env: Mapping[str, str] | None = None,
) -> None:
    """Connect with a short-lived admin client built from librdkafka settings ``config`` and
    return once a broker answers a metadata request.

    Raises ConfigError naming the setting to fix: at once for an authentication failure or
    a protocol / mechanism mismatch, and after ``timeout`` s, naming KIT_BOOTSTRAP_SERVERS
    and the last connection error, if no broker answered. librdkafka's own log lines stay
    out of the terminal; they are logged at DEBUG on ``kit.kafka`` with the failure.
    """
    address = bootstrap or str(config.get("bootstrap.servers", "?"))
    collector = ErrorCollector(settings, env)
    admin = AdminClient({**config, **collector.hooks()})
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                admin.list_topics(timeout=max(min(0.25, left), 0.01))
                return
            except KafkaException as exc:
                failure = exc
            admin.poll(0)  # serves error_cb and the logger
            found = collector.diagnosis(config, address)
            if found is not None:
                raise found
            if time.monotonic() >= deadline:
                why = collector.last_transport() or str(failure)
                raise ConfigError(
                    "KIT_BOOTSTRAP_SERVERS",
                    f"no broker answered at {address} (from {source}) within {timeout:.0f}s: {why}",
                )
    except ConfigError:
        for line in collector.log_lines[-20:]:
            log.debug("librdkafka: %s", line)
        raise


def _kafka_error(error: KafkaError | BaseException) -> KafkaError | None:
    if isinstance(error, KafkaError):
        return error
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


def authorization_message(
    error: KafkaError | BaseException,
    *,
    topic: str | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
    action: str | None = None,
    config: Mapping[str, object] | None = None,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """One line for an authorization error, or None if ``error`` is not one.

    ``error`` is a KafkaError (a delivery report's, a message's ``error()``, an admin
    future's) or a KafkaException carrying one, of kind TOPIC_, GROUP_, CLUSTER_ or
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED. Pass the resource the failed call was about
    (``topic``, ``group`` or ``transactional_id``) and optionally ``action`` (``produce``,
    ``consume``, ``commit``, ``create``, ``describe``) for the ACL operation it needs. The
    principal comes from ``config`` (librdkafka settings) or ``settings`` (the KIT_KAFKA_*
    pass-through), e.g.::

        principal User:bob is not authorized to produce to topic 'orders'
        (TOPIC_AUTHORIZATION_FAILED): it needs WRITE on topic 'orders'; grant it an ACL,
        or set KIT_KAFKA_SASL_USERNAME to a principal that has one
    """
    err = _kafka_error(error)
    if err is None or err.code() not in _AUTHZ_KINDS:
        return None
    if config is None:
        from kit.config import client_config, load_settings

        if settings is None:  # the caller has none at hand: the environment's, as kit reads it
            try:
                settings = load_settings(env)
            except ConfigError:
                settings = None
        if settings is not None:
            config = client_config(settings, env)
    kind = _AUTHZ_KINDS[err.code()]
    named = {"topic": topic, "group": group, "transactional id": transactional_id}.get(kind)
    if kind == "cluster":
        resource = "the cluster"
    elif named:
        resource = f"{kind} {named!r}"
    else:
        resource = f"a {kind}"
    preposition = {"produce": "to", "consume": "from", "commit": "in"}.get(action or "", "on")
    doing = f" to {action} {preposition}" if action else " on"
    operation = _OPERATIONS.get((kind, action or ""))
    needs = f"it needs {operation} on {resource}; " if operation else ""
    principal = principal_of(config or {})
    user_setting = setting_name("sasl.username", settings, env)
    return (
        f"principal {principal} is not authorized{doing} {resource} ({err.name()}): "
        f"{needs}grant it an ACL, or set {user_setting} to a principal that has one"
    )


def authorization_error(
    error: KafkaError | BaseException,
    *,
    topic: str | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
    action: str | None = None,
    config: Mapping[str, object] | None = None,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> ConfigError | None:
    """:func:`authorization_message` as a ConfigError naming the username setting (raise it
    where the authorization failure should stop the service), or None if ``error`` is not an
    authorization error."""
    message = authorization_message(
        error,
        topic=topic,
        group=group,
        transactional_id=transactional_id,
        action=action,
        config=config,
        settings=settings,
        env=env,
    )
    if message is None:
        return None
    return ConfigError(setting_name("sasl.username", settings, env), message)
