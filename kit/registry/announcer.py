"""`Announcer`: writes one instance's registration, heartbeats it, and tombstones it on stop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, Producer

from kit.codec import Codec
from kit.config import Settings, load_settings
from kit.errors import KitError
from kit.registry.describe import calls_of, publications_of, stats_of
from kit.registry.model import (
    HEADER_REASON,
    REPOSITORY,
    Registration,
    endpoints_of,
    from_ms,
    load_registry_config,
    now_ms,
    registry_topic_spec,
)
from kit.service import Service
from kit.transport.admin import ensure_topics
from kit.transport.diagnose import authorization_message
from kit.transport.kafka import admin_client, make_producer
from kit.transport.schema_topic import SchemaTopic

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, TopicMetadata

if TYPE_CHECKING:
    from kit.runtime import Runtime
    from kit.telemetry import Stats

__all__ = ["Announcer"]

log = logging.getLogger("kit.registry")


class Announcer:
    """Announces one running instance of a service on the registry topic.

    `await start()` makes sure the topic exists, writes the registration and starts the
    heartbeat task ("kit-registry-heartbeat-<instance>"), which rewrites the full
    registration with a new `last_heartbeat` every `heartbeat_interval` seconds.
    `await stop()` cancels it and writes a tombstone. With a runtime, `attach(runtime)`
    does both at the right moments: announce once partitions are assigned, tombstone after
    the graceful stop.
    """

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        instance_id: str | None = None,
        *,
        heartbeat_interval: float | None = None,
        topic: str | None = None,
        reply_address: str | None = None,
        metadata: Mapping[str, str] | None = None,
        host: str | None = None,
        pid: int | None = None,
        flush_timeout: float = 5.0,
        admin: AdminClient | None = None,
        schema_topic: SchemaTopic | None = None,
        stats: Stats | None = None,
        listed: dict[str, TopicMetadata] | None = None,
    ) -> None:
        config = load_registry_config(heartbeat=heartbeat_interval, topic=topic)
        self.service = service
        self.settings = settings or load_settings()
        self.instance_id = instance_id or f"{service.name}-{uuid.uuid4().hex[:12]}"
        self.heartbeat_interval = config.heartbeat
        self.topic = config.topic
        self.reply_address = reply_address
        self.metadata: dict[str, str] = {**service.metadata, **(metadata or {})}
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.started_at = from_ms(now_ms())
        self.flush_timeout = flush_timeout
        self.announced = asyncio.Event()
        """Set once the first registration was handed to the producer (`confirmed()` waits
        for the broker; the log line "announced <instance> ..." comes then)."""
        self.announced_at: float | None = None
        """Wall-clock time (epoch s) of the first announce."""
        self.delivery_errors = 0
        """Registry writes the broker refused (each is also logged as a warning)."""
        self.stats = stats
        """Counters carried in every heartbeat (with a runtime: its `stats`, read then)."""
        self._runtime: Runtime | None = None
        self._admin = admin
        self._schema_topic = schema_topic
        self._listed = listed
        """A topic listing from the runtime's start, which `prepare` checks the registry
        topic against instead of asking again (once: a later prepare asks)."""
        self._delivered = False  # a registration was acknowledged by the broker
        self._delivered_lock = threading.Lock()
        """Delivery reports are served by the loop's poll(0) or confirmed()'s flush in a
        worker thread: the first is logged once, whichever thread serves it."""
        self._producer: Producer | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._schema: asyncio.Task[None] | None = None
        self._stopped = False
        self._codec = Codec(REPOSITORY)

    # --- the record --------------------------------------------------------------------

    def registration(self) -> Registration:
        """This instance's registration, with `last_heartbeat` set to now: the declared
        endpoints, what it publishes and calls, and its counters at this moment."""
        stats = self.current_stats()
        return Registration(
            service=self.service.name,
            version=self.service.version,
            instance_id=self.instance_id,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            last_heartbeat=from_ms(now_ms()),
            endpoints=endpoints_of(self.service),
            reply_address=self.reply_address,
            metadata=dict(self.metadata),
            publishes=publications_of(self.service, stats.published if stats else None),
            calls=calls_of(stats),
            stats=stats_of(stats),
        )

    def current_stats(self) -> Stats | None:
        """The counters to carry: `stats`, else the attached runtime's (if it has any)."""
        if self.stats is not None:
            return self.stats
        return getattr(self._runtime, "stats", None) if self._runtime is not None else None

    # --- lifecycle ---------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the topic if missing and make the producer, which connects by itself
        (idempotent).

        `start()` calls it; a runtime may call it earlier, so that announcing at
        assignment costs one produce.
        """
        if self._producer is None:
            await asyncio.to_thread(self._prepare_blocking)

    def _prepare_blocking(self) -> None:
        producer = make_producer(self.settings, low_latency=True)
        if self._admin is None:
            self._admin = admin_client(self.settings)
        listed, self._listed = self._listed, None
        ensure_topics(self._admin, [registry_topic_spec(self.settings, self.topic)], listed=listed)
        # No list_topics() here to connect early: the producer connects and gets its
        # producer id by itself within some 50 ms. A metadata request this early makes
        # librdkafka retry its id request only 500 ms later, and the first announcement
        # (a `kit run` ready line) waited that long in one start in two (bench.startup).
        if self._producer is None:
            self._producer = producer

    def _publish_schema(self) -> None:
        """Put kit.Registration on the schema topic, for readers built on another version;
        not when values are written in the schema registry format, where nothing goes
        to the schema topic (the registrations stay single-object: readers of the same
        version decode them without it)."""
        settings = self.settings
        if settings.schema_registry_url and settings.schema_registry_write:
            return
        topic = self._schema_topic or SchemaTopic(
            self.settings, self._admin or admin_client(self.settings)
        )
        # A SchemaTopic flushes only its own producer here (this runs in a worker thread).
        try:
            topic.publish([Registration.kit_schema()])
        except KitError as exc:  # readers of the same version decode without it
            log.warning("could not publish kit.Registration to the schema topic: %s", exc)
        finally:
            if topic is not self._schema_topic:
                topic.close()

    async def start(self) -> None:
        """Prepare, announce, and start the heartbeat task."""
        if self._stopped:
            raise KitError(f"announcer of {self.instance_id} was stopped")
        await self.prepare()
        self.announce()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(
                self._beat(), name=f"kit-registry-heartbeat-{self.instance_id}"
            )
            self._schema = asyncio.create_task(
                asyncio.to_thread(self._publish_schema),
                name=f"kit-registry-schema-{self.instance_id}",
            )

    def announce(self) -> None:
        """Write the registration now (non-blocking; delivery is confirmed in the background)."""
        producer = self._producer
        if producer is None or self._stopped:
            raise KitError("Announcer.announce() needs prepare() or start() first, and no stop()")
        value = self._codec.encode(self.registration())
        producer.produce(self.topic, value, self._key, on_delivery=self._on_delivery)
        producer.poll(0)
        if self.announced_at is None:
            self.announced_at = time.time()
            self.announced.set()  # logged as "announced" once the broker has it: _on_delivery

    async def confirmed(self, timeout: float = 10.0) -> bool:
        """Wait until the first registration is on the broker; False if `timeout` passed.

        From then on, any reader that syncs (a `Registry` starting, or a fail-fast request
        re-checking) sees this instance. `Runtime.ready` is set at the first assignment,
        a moment before that: await this when a caller must find the service at once.
        Giving up is logged as a warning (a stop meanwhile is not).
        """
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.announced.wait(), timeout)
        except TimeoutError:
            self._not_confirmed(timeout)
            return False
        producer = self._producer
        if producer is None:  # stopped meanwhile
            return False
        left = max(0.0, deadline - time.monotonic())
        await asyncio.to_thread(producer.flush, left)
        if not self._delivered:
            self._not_confirmed(timeout)
        return self._delivered

    def _not_confirmed(self, timeout: float) -> None:
        log.warning(
            "registration of %s not on %s within %gs: callers that fail fast may not find it yet",
            self.instance_id,
            self.topic,
            timeout,
        )

    @property
    def delivered(self) -> bool:
        """True once a registration of this instance is on the broker (readers see it)."""
        return self._delivered

    def set_metadata(self, **values: str) -> None:
        """Update metadata; re-announces at once when running (readers see "changed")."""
        self.metadata.update(values)
        if self._producer is not None and self.announced_at is not None and not self._stopped:
            self.announce()

    async def stop(self, *, tombstone: bool = True) -> None:
        """Cancel the heartbeat, write the tombstone and wait (bounded) for its delivery.

        With `tombstone=False` it only stops heartbeating: readers drop the instance once
        its last heartbeat is older than their TTL, as after a crash.
        """
        await self._cancel_tasks()
        await asyncio.to_thread(self._tombstone, tombstone)

    def close(self) -> None:
        """Synchronous stop, for runtime on_closed hooks: tombstone with a bounded flush."""
        for task in self._tasks():
            task.cancel()
        self._tombstone()

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.flush_timeout)

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self._starting, self._heartbeat, self._schema) if t is not None]

    def _tombstone(self, write: bool = True) -> None:
        if self._stopped:
            return
        self._stopped = True
        producer, self._producer = self._producer, None
        if producer is None or self.announced_at is None:
            return
        if not write:
            producer.flush(self.flush_timeout)
            return
        errors = self.delivery_errors
        try:
            producer.produce(
                self.topic,
                None,
                self._key,
                headers=[(HEADER_REASON, b"stopped")],
                on_delivery=self._on_delivery,
            )
        except KafkaException as exc:  # e.g. the producer is in a fatal state: readers age it out
            self._on_delivery(exc.args[0], None)
            return
        remaining = producer.flush(self.flush_timeout)
        if self.delivery_errors > errors:
            return  # _on_delivery said why
        if remaining:
            log.error(
                "tombstone of %s not confirmed within %.1fs; readers will drop it after the TTL",
                self.instance_id,
                self.flush_timeout,
            )
        else:
            log.info("tombstoned %s on %s", self.instance_id, self.topic)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                self.announce()
            except BufferError:
                log.warning("heartbeat of %s skipped: producer queue full", self.instance_id)

    @property
    def _key(self) -> bytes:
        return self.instance_id.encode()

    # Any: (KafkaError, Message) of a delivery report, or (error, None) if produce() raised
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors += 1
            denied = authorization_message(
                err, topic=self.topic, action="produce", settings=self.settings
            )
            log.warning("registry write of %s failed: %s", self.instance_id, denied or err)
        elif msg.value() is not None and not self._delivered:
            with self._delivered_lock:
                first, self._delivered = not self._delivered, True
            if first:  # readers that sync from now on find the instance: a line to wait on
                log.info("announced %s (%s) on %s", self.instance_id, self.service.name, self.topic)

    # --- runtime integration -----------------------------------------------------------

    def attach(self, runtime: Runtime) -> Announcer:
        """Announce when `runtime` first gets partitions; tombstone after its graceful stop.

        Each heartbeat then carries the runtime's counters (`runtime.stats`).
        """
        self._runtime = runtime
        runtime.on_assigned.append(self._on_assigned)
        runtime.on_closed.append(self._on_closed)
        return self

    @classmethod
    def for_runtime(cls, runtime: Runtime, **kwargs: Any) -> Announcer:  # Any: __init__'s keywords
        """An announcer for a runtime's service and instance id, attached to it.

        `kwargs` go to the constructor; a started runtime passes its admin client and
        schema topic so the announcer opens no clients of its own but its producer.
        """
        return cls(runtime.service, runtime.settings, runtime.instance_id, **kwargs).attach(runtime)

    def _on_assigned(self, _runtime: Runtime) -> None:
        if self._starting is None and not self._stopped:
            self._starting = asyncio.get_running_loop().create_task(
                self.start(), name=f"kit-registry-announce-{self.instance_id}"
            )
            self._starting.add_done_callback(_log_failure)

    async def _on_closed(self, _runtime: Runtime) -> None:
        await self.stop()  # the tombstone's flush runs in a worker thread, not on the loop


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("registry announce failed: %s", task.exception(), exc_info=task.exception())
