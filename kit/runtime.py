"""The runtime loop: fetch → decode → handler → publish → confirm delivery → commit."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from kit.codec import Codec
from kit.commits import Commits
from kit.config import Settings, load_settings, resolve_bootstrap
from kit.dead_letters import dead_letter_topic
from kit.dispatch import Dispatcher
from kit.errors import ConfigError, KitError
from kit.exactly_once import Transactions
from kit.lanes import Lanes
from kit.protocol import Sink
from kit.schema import SchemaRepository
from kit.service import Handler, Service, repository_of
from kit.telemetry import Stats, current_instance
from kit.transport.base import Consuming, Partition, Transport
from kit.transport.consumer import ConsumerThread
from kit.transport.diagnose import authorization_message
from kit.transport.kafka_transport import KafkaTransport
from kit.transport.sink import refused_for_good

__all__ = ["ConsumerThread", "Extension", "Runtime", "repository_of"]

log = logging.getLogger("kit.runtime")


class Extension(Protocol):
    """A feature plugged into a runtime's lifecycle, in the spirit of Nameko's Extension.

    `setup(runtime)` runs in `start()` once the runtime's clients, codec and dispatcher
    exist and before it subscribes: register `runtime.on_assigned` / `on_closed` hooks
    there, or offer something to the dispatcher. `stop(runtime)` runs at the end of the
    graceful stop, after the final commit, in reverse order. The runtime imports no
    feature: kit.app composes the default ones (discovery, requests).
    """

    async def setup(self, runtime: Runtime) -> None:
        """Plug in; the runtime is connected but not yet consuming."""
        ...

    async def stop(self, runtime: Runtime) -> None:
        """Release what setup() took."""
        ...


class _Defaults:
    """The extensions of a Runtime made without `extensions=`: none here; the package
    (kit/__init__.py, the composition root) installs kit.app.default_extensions."""

    def __init__(self) -> None:
        self.make: Callable[[Settings], list[Extension]] = lambda _settings: []


_defaults = _Defaults()


def install_default_extensions(make: Callable[[Settings], list[Extension]]) -> None:
    """Set what every Runtime made without `extensions=` gets (called by kit/__init__)."""
    _defaults.make = make


class Runtime:
    """Runs one instance of a service on a transport (Kafka unless given another).

    `await runtime.start()` opens the transport (checks the cluster, creates topics) and
    joins the group; `await runtime.run()` handles records until `stop()` is called;
    `run()` then finishes the batch in flight, waits for delivery of what it published,
    commits and closes. The Harness runs this same loop, one `step()` at a time, over the
    memory transport.

    Threads (see docs/architecture.md): the event loop decodes, calls handlers, produces
    and polls the producer, so every delivery report (and so every `Ticket` update) runs
    on the loop. The consuming transport owns its client on its own thread (Kafka:
    kit.transport.consumer), stores the offsets `Commits.take()` hands it, and calls the
    `Rebalance` methods below, which move what they change onto the loop.

    Commit rule: a batch's offsets are stored only once it is handled and every record it
    emitted is confirmed, oldest batch first. A delivery the broker refused for good
    dead-letters the input record it came from; any other failed delivery stops the
    service, and its batch stays at the head of the queue, so no path (loop, revoke,
    close, auto-commit) stores an offset at or past it.
    """

    def __init__(
        self,
        service: Service,
        settings: Settings | None = None,
        *,
        repository: SchemaRepository | None = None,
        instance_id: str | None = None,
        extensions: Sequence[Extension] | None = None,
        transport: Transport | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or load_settings()
        self.instance_id = instance_id or f"{service.name}-{uuid.uuid4().hex[:12]}"
        self.repository = repository or repository_of([service], self.settings)
        self.transport: Transport = KafkaTransport() if transport is None else transport
        """What the runtime consumes from and publishes to."""
        self.bootstrap, self.bootstrap_source = resolve_bootstrap(self.settings)
        self.group = self.settings.group_id or service.group
        once = self.settings.exactly_once
        self.exactly_once = service.exactly_once if once is None else once
        """Each batch is one Kafka transaction with its offsets (see kit.exactly_once)."""
        self.transactions: Transactions | None = None
        self.ready = asyncio.Event()
        self.assignment: set[Partition] = set()
        """Partitions this instance owns (updated on the event loop)."""
        self._stopping = asyncio.Event()
        self.commits: Commits
        """The batches in flight and the offsets they may store (made by start())."""
        self.lanes = Lanes(self)
        """The loop's body: a lane per busy partition (see kit.lanes)."""
        self._close_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread, self._started = 0, False
        self._codec = codec
        self.codec: Codec
        self.dispatcher: Dispatcher
        self.consumer: Consuming
        self.sink: Sink
        """Where handlers' events and dead letters go (transactional when exactly-once)."""
        self.reply_sink: Sink
        self.extensions: list[Extension] = (
            list(extensions) if extensions is not None else _defaults.make(self.settings)
        )
        """Features plugged into this runtime's lifecycle (see Extension)."""
        self._set_up: list[Extension] = []
        """The extensions set up so far (stopped again if the start fails)."""
        self.announcer: Any = None  # Any: a kit.registry.Announcer, of a layer above this one
        """The instance's kit.registry.Announcer, when the Announcing extension runs."""
        self.stats = Stats()
        """Counters (per handler, per call target, published topics): kit.telemetry."""
        self.error: BaseException | None = None  # what ended run(), if an error did
        self.registry: Any = None  # Any: a feature's type, which the runtime does not import
        """Optional kit.requests.LiveCheck: lets requests fail fast with ServiceUnavailable."""
        self.on_assigned: list[Callable[[Runtime], None]] = []
        """Called on the loop after each assignment (e.g. to announce the instance)."""
        self.on_closed: list[Callable[[Runtime], Awaitable[None] | None]] = []
        """Called on the loop after a graceful stop committed (e.g. to write a tombstone);
        a callback that returns an awaitable is awaited."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport (topics, clients), publish writer schemas, set up the
        extensions, await the service's start hooks (`Service.on_start`), and subscribe."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        current_instance.set((self.service.name, self.instance_id))
        transactional = self.exactly_once and bool(self.service.handlers)
        await self.transport.open(
            *(self.service, self.settings),
            group=self.group,
            instance_id=self.instance_id,
            dead_letter_topic=self._dead_letter_topic,
            auto_commit=not transactional,  # offsets are committed in the transactions
        )
        try:
            await self._start_opened(transactional)
        except BaseException:
            await self._abort_start()
            raise
        svc = self.service
        log.info(
            "%s %s (instance %s) connected to %s via %s",
            *(svc.name, svc.version, self.instance_id, self.bootstrap, self.bootstrap_source),
        )

    async def _start_opened(self, transactional: bool) -> None:
        """The rest of `start`, once the transport is open."""
        settings, transport = self.settings, self.transport
        schemas = {h.event_type.kit_schema() for h in self.service.handlers}
        headers = await transport.publish_schemas(schemas | set(self.repository))
        self.sink, self.reply_sink = transport.sink, transport.reply_sink
        if transactional:
            kafka = self._kafka("exactly-once processing (KIT_EXACTLY_ONCE)")
            self.transactions = Transactions(self)
            self.sink = kafka.sink_for(await self.transactions.start())
        self.codec = self._make_codec(headers)
        self.dispatcher = Dispatcher(self.service, self.codec, settings, self.sink)
        self.dispatcher.replies.sink = self.reply_sink
        if isinstance(transport, KafkaTransport):
            self.dispatcher.replies.topic_exists = self._topic_exists
            self.dispatcher.replies.refused_for_good = refused_for_good
        self.dispatcher.stopping = self._stopping
        self.dispatcher.stats = self.stats
        self.commits = Commits(settings, self.dispatcher, self.sink, transport.poll)
        self.consumer = transport.consumer
        for extension in self.extensions:
            await extension.setup(self)
            self._set_up.append(extension)
        for hook in self.service.start_hooks:  # declared with Service.on_start
            await hook(self)
        if self.service.handlers:
            await self.consumer.subscribe(self.service.topics(), self)
        self._started = True

    async def _abort_start(self) -> None:
        """Release what a failed start made (consumer, clients, extensions); errors logged."""
        try:
            await self.transport.consumer.close(0.0)
        except Exception:
            log.exception("closing %s's consumer after a failed start failed", self.service.name)
        try:  # the extensions (a metrics server, ...) even when the consumer's close failed
            await self._release(self._set_up)
        except Exception:
            log.exception("releasing %s after a failed start failed", self.service.name)

    def _make_codec(self, headers: Mapping[bytes, bytes] | None) -> Codec:
        """The runtime's codec (or the one given): both wire formats read, and with
        `headers` (the registered schemas), the schema registry format written."""
        registry = bool(self.settings.schema_registry_url)
        codec = self._codec
        if codec is None:
            lookup = self.transport.lookup
            return Codec(self.repository, async_resolver=lookup, headers=headers, registry=registry)
        if headers is not None:  # a shared codec (the harness): it writes what was registered
            codec.set_headers({**(codec.headers or {}), **headers})
        codec.registry = codec.registry or registry
        return codec

    def _dead_letter_topic(self, handler: Handler) -> str:
        return dead_letter_topic(handler, self.settings.dead_letter_suffix)

    def _kafka(self, what: str = "this") -> KafkaTransport:
        transport = self.transport
        if not isinstance(transport, KafkaTransport):
            raise ConfigError(
                "KIT_BOOTSTRAP_SERVERS",
                f"{what} needs the Kafka transport, not {type(transport).__name__}",
            )
        return transport

    @property
    def admin(self) -> Any:  # Any: KafkaTransport.admin, an AdminClient (not yet typed so)
        """The Kafka admin client (made by start(); Any: confluent-kafka's AdminClient)."""
        return self._kafka().admin

    @property
    def producer(self) -> Any:  # Any: KafkaTransport.producer, a Producer (not yet typed so)
        """The plain Kafka producer (made by start(); Any: confluent-kafka's Producer)."""
        return self._kafka().producer

    @property
    def schema_topic(self) -> Any:  # Any: a SchemaTopic (not yet typed so)
        """The kit.transport.schema_topic.SchemaTopic (made by start())."""
        return self._kafka().schema_topic

    async def requester(self) -> Any:  # Any: a feature's type, which the runtime does not import
        """The Requester that handlers' ctx.request() uses (the Requesting extension's)."""
        factory = self.dispatcher.requester
        if factory is None:
            raise KitError(f"{self.service.name}: no extension gives requests (kit.app.Requesting)")
        return await factory()

    async def _topic_exists(self, topic: str) -> bool:
        kafka = self._kafka()
        if topic in kafka.reply_sink.known_topics:
            return True
        found = await asyncio.to_thread(kafka.admin.list_topics, topic, 5)
        meta = found.topics.get(topic)
        exists = meta is not None and meta.error is None
        if meta is not None and meta.error is not None:
            denied = authorization_message(
                meta.error, topic=topic, action="produce", settings=self.settings
            )
            if denied:
                log.error("cannot reply to %s: %s", topic, denied)
        if exists:
            kafka.reply_sink.known_topics.add(topic)
        return exists

    def stop(self) -> None:
        """Ask the runtime to stop after the batch in flight (safe from signal handlers)."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._stopping.set)
        else:
            self._stopping.set()

    @property
    def in_flight(self) -> int:
        """Records fetched whose offsets are not stored yet (being handled, or waiting for
        the delivery of what they published)."""
        commits = getattr(self, "commits", None)
        return sum(t.records for t in commits.tickets) if commits is not None else 0

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Handle records until stop(); then finish, commit and close.

        Raises DeliveryError, after closing without committing past it, when a record
        it published could not be delivered and its input could not be dead-lettered.
        """
        if not self._started:
            await self.start()
        current_instance.set((self.service.name, self.instance_id))  # this task's logs
        try:
            turn, stopping = self.lanes.turn, self._stopping
            while not stopping.is_set():
                await turn(False)
        except BaseException as exc:
            self.error = exc  # /health/live reports it (kit.health)
            raise
        finally:
            await self.close()

    async def step(self) -> int:
        """One turn of the loop, waited out: fetch a batch, handle it (partitions in their
        lanes), serve delivery reports, settle. Returns the number of records fetched. (`run`
        turns without waiting for the lanes: see kit.lanes.)"""
        return await self.lanes.turn(True)

    async def close(self) -> None:
        """Settle, commit, close the consumer, run the on_closed hooks and stop the
        extensions, within KIT_SHUTDOWN_TIMEOUT (the consumer's close gets at least 5 s)."""
        timeout = self.settings.shutdown_timeout
        self._close_deadline = time.monotonic() + timeout
        try:
            await self.lanes.close(self._time_left())
            if self.commits.failed is None:
                await self.commits.quiesce(self._time_left())
        finally:
            await self.consumer.close(self._time_left())
            await self._after_close()

    def _time_left(self) -> float:
        return max(0.0, self._close_deadline - time.monotonic())

    async def _after_close(self) -> None:
        for callback in self.on_closed:
            try:
                result = callback(self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_closed callback %r failed", callback)
        await self._release(self.extensions)
        d = self.dispatcher
        log.info(
            "%s stopped: %d handled, %d dead-lettered, %d expired requests skipped",
            *(self.service.name, d.handled, d.dead_lettered, d.expired),
        )

    async def _release(self, extensions: list[Extension]) -> None:
        """Stop `extensions` (the last first; errors logged), close the transport and a
        transactional producer."""
        for extension in reversed(extensions):
            try:
                await extension.stop(self)
            except Exception:
                log.exception("stopping extension %r failed", extension)
        await self.transport.close()
        if self.transactions is not None:
            self.transactions.close()

    # --- Rebalance: what the consuming transport reports (from any thread) -------------

    def assigned(self, partitions: set[Partition]) -> None:
        """The transport assigned these partitions: note them on the loop, run hooks."""
        self._to_loop(self._assigned, partitions)

    def _assigned(self, owned: set[Partition]) -> None:
        self.assignment |= owned
        self.ready.set()
        for callback in self.on_assigned:
            callback(self)

    def revoked(self, partitions: set[Partition]) -> None:
        """The transport gave these partitions up (after `settle` and a commit)."""
        self._to_loop(self.assignment.difference_update, partitions)

    def lost(self, partitions: set[Partition]) -> None:
        """The transport lost these partitions: their settled offsets are not stored."""
        self.commits.drop(partitions)
        self._to_loop(self.lanes.lost, partitions)

    async def settle(self, timeout: float, partitions: set[Partition] | None = None) -> None:
        """Finish or abandon the work of `partitions` (None: all), then settle what is in
        flight, within `timeout` and the close deadline (a revoke)."""
        if self._close_deadline:
            timeout = min(timeout, self._time_left())
        await self.lanes.settle(timeout, partitions)

    def take(self) -> dict[Partition, int]:
        """The offsets settled since the last call, for the transport to store."""
        return self.commits.take()

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:  # Any: any callback, its args
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
        elif loop.is_running():
            loop.call_soon_threadsafe(fn, *args)
