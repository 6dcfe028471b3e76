"""Clean up reply topics left behind by requesters that died (`kit replies prune` runs it)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from kit.config import Settings
from kit.errors import KitError
from kit.protocol import REPLY_TOPIC_PREFIX
from kit.transport.kafka import admin_client, make_consumer

__all__ = ["live_client_ids", "prune_reply_topics"]


def live_client_ids(admin: AdminClient, timeout: float = 10.0) -> set[str]:
    """client.id of every member of every consumer group (kit sets it to the instance id)."""
    groups = admin.list_consumer_groups(request_timeout=timeout).result(timeout)
    ids = [g.group_id for g in groups.valid]
    if not ids:
        return set()
    live: set[str] = set()
    for future in admin.describe_consumer_groups(ids, request_timeout=timeout).values():
        try:
            description = future.result(timeout)
        except Exception:
            continue
        live.update(m.client_id for m in description.members)
    return live


def prune_reply_topics(
    settings: Settings, *, idle: float = 3600.0, dry_run: bool = False, timeout: float = 10.0
) -> list[str]:
    """Delete reply topics whose instance is in no consumer group and idle for `idle` s.

    A requester that is still alive but idle re-creates its reply topic before its next
    request, so pruning an idle topic never loses a reply to a live caller.
    """
    admin = admin_client(settings)
    topics = [
        t for t in admin.list_topics(timeout=timeout).topics if t.startswith(REPLY_TOPIC_PREFIX)
    ]
    if not topics:
        return []
    live = live_client_ids(admin, timeout)
    consumer = make_consumer(settings, "kit-replies-prune", **{"enable.auto.commit": False})
    stale = []
    try:
        for topic in topics:
            if topic[len(REPLY_TOPIC_PREFIX) :] in live:
                continue
            if _newest_age(consumer, topic, timeout) >= idle:
                stale.append(topic)
    finally:
        consumer.close()
    if stale and not dry_run:
        for topic, future in admin.delete_topics(stale, operation_timeout=timeout).items():
            try:
                future.result(timeout)
            except Exception as exc:
                raise KitError(f"could not delete {topic}: {exc}") from exc
    return stale


def _newest_age(consumer: Consumer, topic: str, timeout: float) -> float:
    """Seconds since the newest record of a one-partition topic (infinite when empty)."""
    tp = TopicPartition(topic, 0)
    watermarks = consumer.get_watermark_offsets(tp, timeout=timeout)
    if watermarks is None:
        return 0.0  # unknown: treat as fresh
    low, high = watermarks
    if high <= low:
        return float("inf")
    consumer.assign([TopicPartition(topic, 0, high - 1)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            return time.time() - msg.timestamp()[1] / 1000
    return 0.0  # unknown: treat as fresh
