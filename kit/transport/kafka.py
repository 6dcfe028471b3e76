"""confluent-kafka clients: their configs, making them, a batch fetch, record descriptions.

Every client made here logs through Python logging (:class:`LibrdkafkaLog`), not to
stderr. Topic admin lives in kit.transport.admin and the producer sink in
kit.transport.sink.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from kit.config import Settings, client_config, resolve_bootstrap, warn_unknown_variables
from kit.errors import ConfigError
from kit.protocol import MessageLike
from kit.transport.diagnose import wait_until_reachable
from kit.transport.sink import PRODUCER_MESSAGE_MAX_BYTES

__all__ = [
    "LIBRDKAFKA_LOG",
    "PREFETCH",
    "LibrdkafkaLog",
    "admin_client",
    "check_reachable",
    "consumer_config",
    "make_consumer",
    "make_producer",
    "poll_batch",
    "producer_config",
    "watermarks",
]

# Any: each Any here is a librdkafka setting's value (str, int, float, bool or a callback),
# of the kinds confluent-kafka's clients take in their config dict.

C = TypeVar("C", Producer, Consumer, AdminClient)


def base_config(settings: Settings) -> dict[str, Any]:
    """bootstrap.servers plus every pass-through client setting."""
    bootstrap, _source = resolve_bootstrap(settings)
    return {"bootstrap.servers": bootstrap, **client_config(settings)}


BATCH_SIZE = 262_144
"""The producer's default `batch.size` (librdkafka's is 1,000,000). Kafka applies a
topic's `max.message.bytes` to whole record batches, so a batch larger than a topic's
limit is refused with every good record in it; 256 KiB stays under the limits topics are
usually given. Override it with KIT_KAFKA_BATCH_SIZE."""


def producer_config(
    settings: Settings,
    *,
    low_latency: bool = False,
    message_max_bytes: int | None = None,
    transactional_id: str | None = None,
) -> dict[str, Any]:
    """Producer settings: idempotent, acks=all; linger 0 on reply paths.

    `message_max_bytes` raises librdkafka's record size limit, e.g. so that dead-letter
    topics take records as large as their sources do. `transactional_id` makes it a
    transactional producer (see kit.exactly_once).
    """
    config: dict[str, Any] = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms
        if settings.linger_ms is not None
        else (0 if low_latency else 5),
        "socket.nagle.disable": True,
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        "queue.buffering.max.messages": 200_000,
        "batch.size": BATCH_SIZE,
    }
    if message_max_bytes is not None and message_max_bytes > PRODUCER_MESSAGE_MAX_BYTES:
        config["message.max.bytes"] = message_max_bytes
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = max(60_000, config["message.timeout.ms"] + 10_000)
    return {**config, **base_config(settings)}


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """At-least-once consumer settings: offsets stored by the kit after handling."""
    return {
        "group.id": group,
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": 10,
        **PREFETCH,
        "socket.nagle.disable": True,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1_000,
        **(_STATISTICS if settings.metrics_port is not None else {}),
        **base_config(settings),
    }


SESSION_TIMEOUT_MS = 20_000
"""How long a consumer that hears nothing from its group coordinator keeps its partitions.

It must outlast a cluster's failover: a broker that dies without a word is fenced after
the cluster's ``broker.session.timeout.ms`` (9 s by default), and only then do its group
coordinators move and acks=all writes go on. At 10 s, killing the node that coordinated a
responder's group made the responder drop its partitions and rejoin after the failover:
calls failed for 19-21 s instead of ~10 s (tests/fault/test_cluster.py). The cost is that
a crashed instance (kill -9; a graceful stop leaves the group at once) holds its partitions
this long. ``KIT_KAFKA_SESSION_TIMEOUT_MS`` overrides it."""


PREFETCH = {
    "queued.min.messages": 5_000,
    "queued.max.messages.kbytes": 16_384,
    "fetch.queue.backoff.ms": 10,
}
"""How far a consumer fetches ahead of what it handles (each KIT_KAFKA_* overrides).

librdkafka's defaults (100,000 records per partition, 64 MiB) let a consumer with a backlog
hold most of it in memory: RSS rose by 20-25% after the first 100k records of a
million-record backlog and peaked at 128 MiB (`bench.soak`). 5,000 records per partition
and 16 MiB in all are still more than a second of work at kit's pipeline rate. Smaller
queues cost throughput only through ``fetch.queue.backoff.ms``: at librdkafka's 1,000 ms, a
partition whose queue was full is not fetched again for a second (20,000 records per
partition halved the pipeline's rate); at 10 ms it is refetched as soon as it drains."""


_STATISTICS = {"statistics.interval.ms": 5_000}
"""With metrics on (KIT_METRICS_PORT), consumers report librdkafka statistics (the
consumer lag, kit.metrics) this often; KIT_KAFKA_STATISTICS_INTERVAL_MS overrides it."""


class LibrdkafkaLog:
    """The ``logger`` of every client kit makes: librdkafka's log lines go to the Python
    logger ``kit.librdkafka``, each distinct line shown once.

    confluent-kafka hands a client's lines to ``log()`` when the client is polled (kit
    polls its producers and consumers, and :class:`_AdminPolls` its admin clients). A line
    is logged at its level the first time, and again only after ``quiet_after`` seconds
    without it; repeats in between are logged at DEBUG. Lines that differ only in the
    client, the thread or a duration (``after 12ms in state UP``) count as one, so a
    closed port gives one line, not one per client and reconnect. librdkafka's errors are
    logged as warnings: it retries them, and kit raises what it cannot recover from (a
    ConfigError at start, a DeliveryError, ...).
    """

    _THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")
    _VARYING = re.compile(r"\d+(?:ms\b| identical error\(s\) suppressed)")
    _LEVELS = {logging.CRITICAL: logging.ERROR, logging.ERROR: logging.WARNING}
    _KEEP = 1000  # distinct lines remembered at most

    def __init__(self, logger: logging.Logger, quiet_after: float = 300.0) -> None:
        self.logger = logger
        self.quiet_after = quiet_after
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> None:
        """What confluent-kafka calls: ``log(level, "%s [%s] %s", facility, client, line)``."""
        text = self._THREAD.sub("", str(args[-1]) if args else str(msg))
        key = self._VARYING.sub("#", text)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            self._last[key] = now
            if len(self._last) > self._KEEP:
                self._last = {k: t for k, t in self._last.items() if now - t < self.quiet_after}
        new = last is None or now - last >= self.quiet_after
        self.logger.log(self._LEVELS.get(level, level) if new else logging.DEBUG, "%s", text)


LIBRDKAFKA_LOG = LibrdkafkaLog(logging.getLogger("kit.librdkafka"))
log = logging.getLogger("kit.kafka")
"""The one LibrdkafkaLog of the process: a line several clients log is shown once."""


class _AdminPolls:
    """Polls kit's admin clients now and then, which serves their log lines: nothing else
    polls an admin client, and confluent-kafka keeps a client's lines until a poll."""

    interval = 1.0

    def __init__(self) -> None:
        self.admins: weakref.WeakSet[AdminClient] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, admin: AdminClient) -> None:
        """Poll `admin` until it is garbage; the thread runs while there is one to poll."""
        with self.lock:
            self.admins.add(admin)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="kit-admin-log", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self.lock:
                admins = list(self.admins)
                if not admins:
                    self.thread = None
                    return
            for admin in admins:
                admin.poll(0)
            del admins


_admin_polls = _AdminPolls()


def _client(
    factory: Callable[[dict[str, Any]], C], config: dict[str, Any], settings: Settings
) -> C:
    """`factory(config)` logging through LIBRDKAFKA_LOG, with a bad setting raised as
    ConfigError naming it."""
    try:
        client = factory({**config, "logger": LIBRDKAFKA_LOG})
    except (KafkaException, ValueError, TypeError) as exc:
        raise _config_error(exc, settings) from None
    if isinstance(client, AdminClient):
        _admin_polls.add(client)
    return client


def _config_error(exc: Exception, settings: Settings) -> ConfigError:
    text = str(exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc)
    for key in client_config(settings):
        if f'"{key}"' in text or key in text:
            env = "KIT_KAFKA_" + key.upper().replace(".", "_")
            return ConfigError(env, f"invalid client setting {key}: {text}")
    return ConfigError("KIT_KAFKA_CONFIG", f"invalid client settings: {text}")


def make_producer(
    settings: Settings,
    *,
    low_latency: bool = False,
    message_max_bytes: int | None = None,
    transactional_id: str | None = None,
) -> Producer:
    """A Producer; a bad setting raises ConfigError naming its environment variable."""
    config = producer_config(
        settings,
        low_latency=low_latency,
        message_max_bytes=message_max_bytes,
        transactional_id=transactional_id,
    )
    return _client(Producer, config, settings)


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A Consumer in `group`; a bad setting raises ConfigError naming it.

    `enable.auto.offset.store` stays false whatever KIT_KAFKA_* says: kit stores each
    offset itself once its record is handled and delivered (the commit rule)."""
    config = {**consumer_config(settings, group), **overrides, "enable.auto.offset.store": False}
    return _client(Consumer, config, settings)


def poll_batch(consumer: Consumer, timeout: float, limit: int = 500) -> list[Message]:
    """Wait up to `timeout` for one record, then take what else is already fetched (up to
    `limit` in all). `consume(n, timeout)` alone waits for n records or the whole timeout,
    which adds its timeout to the latency of every quiet moment."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """The low and high offsets of `tp`, asked of its leader (not cached), retrying errors
    that pass (a topic just created has no leader yet: NOT_LEADER_FOR_PARTITION,
    UNKNOWN_TOPIC_OR_PART; no broker reached yet: _ALL_BROKERS_DOWN) until `timeout`;
    then, or for any other error, KafkaException.

    The first attempt waits `FIRST_ATTEMPT` s, each after one that got no answer twice as
    long: a fresh consumer's first query can be lost with its bootstrap connection
    (librdkafka replaces that connection once it learns the broker's id) and librdkafka
    asks the leader again only about 700 ms later, where asking again ourselves gets the
    answer at once."""
    deadline = time.monotonic() + timeout
    attempt = FIRST_ATTEMPT
    while True:
        left = deadline - time.monotonic()
        try:
            wait = max(min(left, attempt), 0.1)
            low, high = consumer.get_watermark_offsets(tp, timeout=wait, cached=False)
            return low, high
        except KafkaException as exc:
            err = exc.args[0]
            if not isinstance(err, KafkaError):
                raise
            timed_out = err.code() == KafkaError._TIMED_OUT
            passing = timed_out or err.retriable() or err.code() in _PASSING
            if not passing or time.monotonic() + 0.1 >= deadline:
                raise
            log.debug(
                "end offset of %s[%d] not known yet (%s); asking again", tp.topic, tp.partition, err
            )
            if timed_out:
                attempt *= 2  # a slow (remote, TLS) broker: each attempt waits longer
            else:
                time.sleep(0.1)  # a leader being elected, a broker being reached: soon


FIRST_ATTEMPT = 0.1
"""How long `watermarks` waits for its first answer before asking again (a local broker
answers in about 5 ms)."""


_PASSING = frozenset(
    {
        # a topic just created has no leader yet
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._UNKNOWN_PARTITION,
        # a fresh client has reached no broker yet (e.g. its first bootstrap address is a
        # node that is down): librdkafka goes on to the others
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
    }
)


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient; a bad setting raises ConfigError naming it."""
    return _client(AdminClient, base_config(settings), settings)


def check_reachable(admin: AdminClient, settings: Settings, timeout: float = 15.0) -> None:
    """Fail with ConfigError naming the setting to fix if no broker answers in time.

    Connects with a short-lived probe client of the same settings (kit.transport.diagnose)
    whose librdkafka log lines stay out of the terminal: a wrong password, SASL mechanism or
    security protocol fails at once naming its KIT_KAFKA_* setting; no answer within
    `timeout` names KIT_BOOTSTRAP_SERVERS. (`admin` is not the probe: a client's error and
    log callbacks are fixed when it is made.) Every kit process runs this as it starts, so
    this is also where unknown KIT_* variables are warned about (once each).
    """
    warn_unknown_variables()
    bootstrap, source = resolve_bootstrap(settings)
    wait_until_reachable(
        base_config(settings), timeout, settings=settings, bootstrap=bootstrap, source=source
    )


def describe_record(msg: MessageLike | Message) -> str:
    """topic[partition]@offset, for logs."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def json_headers(headers: list[tuple[str, bytes]] | None) -> str:
    """Headers as JSON text, for logs and the CLI."""
    return json.dumps({k: v.decode(errors="replace") for k, v in headers or []})
