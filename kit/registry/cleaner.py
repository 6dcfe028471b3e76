"""`Cleaner`: tombstones registry entries of instances that stopped heartbeating long ago."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Producer

from kit.config import Settings
from kit.registry.model import HEADER_CLEANER, HEADER_HEARTBEAT, HEADER_REASON
from kit.registry.view import RegistryView
from kit.transport.kafka import make_producer

__all__ = ["Cleaner"]

log = logging.getLogger("kit.registry")


class Cleaner:
    """Removes dead instances from the topic, so compaction can drop them.

    Any reader may clean, and several may clean at once. The safe rule: an entry is
    tombstoned only if, after reading the topic to its current end, the latest record for
    its key is still the very heartbeat judged too old (older than `clean_after`). The
    tombstone carries that heartbeat (header kit-registry-heartbeat), so a reader that has
    already seen a newer heartbeat for the key ignores it; and a live instance rewrites its
    full registration at its next heartbeat anyway. Runs in the registry's reader thread.
    """

    def __init__(self, settings: Settings, topic: str, clean_after: float, reader_id: str) -> None:
        self.settings = settings
        self.topic = topic
        self.clean_after = clean_after
        self.reader_id = reader_id
        self.tombstones_written = 0
        self.rounds = 0
        """Cleaning rounds run so far (decisions made, whether or not anything was removed)."""
        self._producer: Producer | None = None

    def run_once(
        self, view: RegistryView, lock: threading.Lock, catch_up: Callable[[float], bool]
    ) -> int:
        """Decide, read to the end, re-check, tombstone; returns how many were written."""
        self.rounds += 1
        with lock:
            candidates = view.older_than(time.time(), self.clean_after)
        if not candidates or not catch_up(5.0):
            return 0
        now = time.time()
        written = 0
        for instance_id, judged in candidates:
            with lock:
                latest = view.heartbeat_ms(instance_id)
            if latest != judged or now - judged / 1000 <= self.clean_after:
                continue
            self._tombstone(instance_id, judged)
            written += 1
        return written

    def _tombstone(self, instance_id: str, judged_ms: int) -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings, low_latency=True)
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_REASON, b"expired"),
            (HEADER_HEARTBEAT, str(judged_ms).encode()),
            (HEADER_CLEANER, self.reader_id.encode()),
        ]
        self._producer.produce(self.topic, None, instance_id.encode(), headers=headers)
        self._producer.poll(0)
        self.tombstones_written += 1
        log.info(
            "registry cleaner %s tombstoned %s (last heartbeat %.1fs ago)",
            self.reader_id,
            instance_id,
            time.time() - judged_ms / 1000,
        )

    def poll(self) -> None:
        """Serve delivery reports of written tombstones."""
        if self._producer is not None:
            self._producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for written tombstones to be confirmed."""
        producer, self._producer = self._producer, None
        if producer is not None and producer.flush(timeout):
            log.error("cleaner tombstones on %s not confirmed within %.1fs", self.topic, timeout)
