"""Start-up topic work: a service's topics and dead-letter topics, their partitions and limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, TopicMetadata

from kit.config import Settings
from kit.errors import KitError
from kit.service import Handler
from kit.transport.admin import TopicSpec, ensure_topics, raise_topic_limits, topic_limits
from kit.transport.kafka import check_reachable

__all__ = ["ServiceTopics", "listing", "setup_service_topics"]

log = logging.getLogger("kit.runtime")


@dataclass(frozen=True)
class ServiceTopics:
    """What start-up learned about the topics a runtime reads and dead-letters to."""

    partitions: dict[str, int]
    limits: dict[str, int]
    """max.message.bytes of each topic, where it could be read."""
    producer_limit: int | None
    """The largest of those limits: the producer's message.max.bytes must reach it."""


def setup_service_topics(
    admin: AdminClient,
    settings: Settings,
    handlers: Sequence[Handler],
    dead_letter_topic: Callable[[Handler], str],
) -> ServiceTopics:
    """Blocking (run it in a worker thread): reach the cluster, create or check the handlers'
    topics and their dead-letter topics, and size the limits.

    A dead-letter topic must take whatever its source takes: it is created with its
    source's partition count and `max.message.bytes`, an existing one with less is raised
    to it (or, if the broker refuses, its records are cut to fit, see
    Dispatcher.dead_letter), and the producer's `message.max.bytes` is raised to the
    largest source limit.
    """
    check_reachable(admin, settings, settings.connect_timeout)
    create = settings.create_topics
    specs = [
        TopicSpec(h.topic, h.partitions or settings.topic_partitions, settings.topic_replication)
        for h in handlers
    ]
    if create:
        ensure_topics(admin, specs)
    meta = listing(admin, [s.name for s in specs], 15.0 if create else 0)
    missing = [s.name for s in specs if s.name not in meta]
    if missing:
        why = "created but not listed in time" if create else "missing"
        hint = "" if create else " and KIT_CREATE_TOPICS is false"
        raise KitError(f"topics {why}{hint}: {missing}")
    sources = [h.topic for h in handlers]
    limits = topic_limits(admin, sources) if sources else {}
    dlt_of = {h.topic: dead_letter_topic(h) for h in handlers}
    if create:  # DLTs mirror their source's partitions and size limit
        ensure_topics(
            admin, [_mirror(dlt, source, meta, limits, settings) for source, dlt in dlt_of.items()]
        )
        meta = listing(admin, [*sources, *dlt_of.values()], 15.0)
    dlt_limits = topic_limits(admin, [d for d in dlt_of.values() if d in meta])
    _raise_dead_letter_limits(admin, dlt_of, limits, dlt_limits)
    _warn_fewer_partitions(dlt_of, meta)
    partitions = {
        name: len(meta[name].partitions)
        for name in [*sources, *dlt_of.values()]
        if name in meta and meta[name].error is None
    }
    largest = max([*limits.values(), *dlt_limits.values()], default=0)
    return ServiceTopics(partitions, {**limits, **dlt_limits}, largest or None)


def _mirror(
    dlt: str,
    source: str,
    meta: dict[str, TopicMetadata],
    limits: dict[str, int],
    settings: Settings,
) -> TopicSpec:
    config = (("max.message.bytes", str(limits[source])),) if source in limits else ()
    return TopicSpec(dlt, len(meta[source].partitions), settings.topic_replication, config)


def _raise_dead_letter_limits(
    admin: AdminClient,
    dlt_of: dict[str, str],
    limits: dict[str, int],
    dlt_limits: dict[str, int],
) -> None:
    """Raise existing DLTs that take less than their source; update `dlt_limits`."""
    raise_to = {
        dlt: limits[source]
        for source, dlt in dlt_of.items()
        if source in limits and dlt in dlt_limits and dlt_limits[dlt] < limits[source]
    }
    if not raise_to:
        return
    refused = raise_topic_limits(admin, raise_to)
    for dlt, limit in raise_to.items():
        if dlt in refused:
            log.warning(
                "dead-letter topic %s takes records up to %d bytes, its source up to %d, and "
                "raising its max.message.bytes failed (%s): larger dead letters will be cut "
                "to fit (header kit-dlt-truncated)",
                dlt,
                dlt_limits[dlt],
                limit,
                refused[dlt],
            )
        else:
            log.info("raised max.message.bytes of %s to %d", dlt, limit)
            dlt_limits[dlt] = limit


def _warn_fewer_partitions(dlt_of: dict[str, str], meta: dict[str, TopicMetadata]) -> None:
    for source, dlt in dlt_of.items():
        if dlt in meta and source in meta:
            have, want = len(meta[dlt].partitions), len(meta[source].partitions)
            if have < want:
                log.warning(
                    "dead-letter topic %s has %d partitions, its source %s has %d: dead "
                    "letters of the higher partitions go to a partition Kafka chooses",
                    dlt,
                    have,
                    source,
                    want,
                )


def listing(admin: AdminClient, names: list[str], wait: float) -> dict[str, TopicMetadata]:
    """Topic metadata, asked again (up to `wait` seconds) until it lists every name: on a
    cluster, the broker that answers may not know a topic created a moment ago."""
    deadline = time.monotonic() + wait
    while True:
        topics: dict[str, TopicMetadata] = admin.list_topics(timeout=15).topics
        ready = all(n in topics and topics[n].error is None for n in names)
        if ready or time.monotonic() >= deadline:
            return {n: t for n, t in topics.items() if t.error is None}
        time.sleep(0.1)
