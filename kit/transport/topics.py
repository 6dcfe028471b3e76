"""Start-up topic work: a service's topics and dead-letter topics, their partitions and limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    listed: dict[str, TopicMetadata] = field(default_factory=dict)
    """The cluster's topic listing taken at start (with the topics start-up created), for
    the other topics checked while starting (the schema topic, ...): one answer for all."""


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

    Metadata requests, when every topic exists: one topic listing and one read of the
    topics' configurations (creating topics adds a create and the listings that wait
    for their leaders).
    """
    check_reachable(admin, settings, settings.connect_timeout)
    create = settings.create_topics
    specs = [
        TopicSpec(h.topic, h.partitions or settings.topic_partitions, settings.topic_replication)
        for h in handlers
    ]
    listed: dict[str, TopicMetadata] = admin.list_topics(timeout=15).topics
    if create:
        ensure_topics(admin, specs, listed=listed)
    meta = _usable(listed)
    missing = [s.name for s in specs if s.name not in meta]
    if missing and create:  # listed with an error (no leader yet): ask again, up to 15 s
        listed.update(listing(admin, missing, 15.0))
        meta = _usable(listed)
        missing = [name for name in missing if name not in meta]
    if missing:
        why = "created but not listed in time" if create else "missing"
        hint = "" if create else " and KIT_CREATE_TOPICS is false"
        raise KitError(f"topics {why}{hint}: {missing}")
    sources = [h.topic for h in handlers]
    dlt_of = {h.topic: dead_letter_topic(h) for h in handlers}
    read = topic_limits(admin, [*sources, *(d for d in dlt_of.values() if d in meta)])
    limits = {t: read[t] for t in sources if t in read}
    dlt_limits = {d: read[d] for d in dlt_of.values() if d in read}
    if create:  # DLTs mirror their source's partitions and size limit
        mirrors = [_mirror(dlt, source, meta, limits, settings) for source, dlt in dlt_of.items()]
        created = ensure_topics(admin, mirrors, listed=listed)
        meta = _usable(listed)
        dlt_limits.update(_configured_limits(mirrors, created))
    _raise_dead_letter_limits(admin, dlt_of, limits, dlt_limits)
    _warn_fewer_partitions(dlt_of, meta)
    partitions = {
        name: len(meta[name].partitions) for name in [*sources, *dlt_of.values()] if name in meta
    }
    largest = max([*limits.values(), *dlt_limits.values()], default=0)
    return ServiceTopics(partitions, {**limits, **dlt_limits}, largest or None, listed)


def _usable(listed: dict[str, TopicMetadata]) -> dict[str, TopicMetadata]:
    """The topics of a listing that were listed without an error."""
    return {n: t for n, t in listed.items() if t.error is None}


def _configured_limits(specs: list[TopicSpec], created: list[str]) -> dict[str, int]:
    """The `max.message.bytes` that the topics just created were given."""
    made = set(created)
    return {
        s.name: int(value)
        for s in specs
        if s.name in made
        for key, value in s.config
        if key == "max.message.bytes"
    }


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
