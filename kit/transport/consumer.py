"""The Kafka consuming side: one thread owns the Consumer; fetch, store, commit, rebalance."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any, ParamSpec, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kit.config import Settings
from kit.protocol import MessageLike
from kit.transport.base import Partition, Rebalance
from kit.transport.diagnose import authorization_error
from kit.transport.kafka import make_consumer, poll_batch

__all__ = ["ConsumerThread", "KafkaConsumer"]

log = logging.getLogger("kit.runtime")
T = TypeVar("T")
P = ParamSpec("P")


class ConsumerThread(Executor):
    """The one thread that owns the consumer: runs every call on it, in order.

    A daemon thread: a librdkafka call that never returns (a close waiting for a group
    coordinator that does not answer) cannot keep the process alive past its stop.
    """

    def __init__(self, name: str) -> None:
        # Any: each queued call has its own result type
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        # in a copy of the creator's context: its logs name the instance (kit.telemetry)
        run = contextvars.copy_context().run
        self._thread = threading.Thread(target=run, args=(self._serve,), name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn(*args, **kwargs)` for the consumer thread."""
        future: Future[T] = Future()
        self._calls.put((future, partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the thread after the calls queued so far (waiting, if asked, at most 10 s)."""
        self._calls.put(None)
        if wait:
            self._thread.join(10)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class KafkaConsumer:
    """`Consuming` on a confluent-kafka Consumer in a consumer group.

    Threads: every call on the Consumer (subscribe, consume, store_offsets, commit,
    pause, close) runs on one `ConsumerThread`, and so do the rebalance callbacks, which
    librdkafka calls inside `consume`. The event loop never calls the Consumer. A revoke
    asks the loop to settle (`Rebalance.settle`, with a deadline) and waits for it; the
    loop can always answer, because it only ever awaits this thread.
    """

    # Any: librdkafka setting values, as confluent-kafka's Consumer takes them
    def __init__(self, settings: Settings, group: str, instance_id: str, **overrides: Any) -> None:
        self.settings = settings
        self.group = group
        self.on_stats: Callable[[str], None] | None = None
        """Gets librdkafka's statistics JSON, on the consumer thread (kit.metrics sets it)."""
        if settings.metrics_port is not None:
            overrides = {"stats_cb": self._stats, **overrides}
        self.client: Consumer | None = make_consumer(
            settings, group, **{"client.id": instance_id, **overrides}
        )
        """The Consumer (None once closed); call it only through `call`."""
        self.instance_id = instance_id
        self.thread = ConsumerThread(f"kit-consumer-{instance_id}")
        self._listener: Rebalance | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owned: set[Partition] = set()
        self._close_deadline = 0.0

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on the consumer thread and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(
            self.thread, partial(fn, *args, **kwargs)
        )

    async def subscribe(self, topics: Sequence[str], listener: Rebalance) -> None:
        """Subscribe; the rebalance callbacks report to `listener`."""
        assert self.client is not None
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        await self.call(
            self.client.subscribe,
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    async def fetch(self) -> Sequence[MessageLike]:
        """Store what was settled, then fetch up to KIT_BATCH_SIZE records (50 ms wait)."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._fetch)

    async def pause(self, partitions: Iterable[Partition]) -> None:
        """Pause fetching from these partitions."""
        assert self.client is not None
        await self.call(self.client.pause, [TopicPartition(t, p) for t, p in partitions])

    async def resume(self, partitions: Iterable[Partition]) -> None:
        """Resume fetching from these partitions."""
        assert self.client is not None
        await self.call(self.client.resume, [TopicPartition(t, p) for t, p in partitions])

    async def close(self, timeout: float) -> None:
        """Store, commit, leave the group and close, within `timeout` (at least 5 s): a
        close waits on the group coordinator, never for ever."""
        self._close_deadline = time.monotonic() + timeout
        client, self.client = self.client, None
        if client is not None:
            left = max(5.0, timeout)
            try:
                await asyncio.wait_for(self.call(self._close, client), left)
            except TimeoutError:
                log.error(
                    "the consumer did not close within %.0fs (is the group coordinator "
                    "reachable?); leaving it: what was not committed is handled again",
                    left,
                )
        self.thread.shutdown(wait=False)

    # --- on the consumer thread ---------------------------------------------------------

    def _stats(self, statistics: str) -> None:
        """librdkafka's statistics callback (inside consume): hand them to `on_stats`."""
        on_stats = self.on_stats
        if on_stats is not None:
            on_stats(statistics)

    def _fetch(self) -> Sequence[MessageLike]:
        client = self.client
        assert client is not None
        self._store_pending(client)
        messages = poll_batch(client, 0.05, self.settings.batch_size)
        records = [m for m in messages if m.error() is None]
        if len(records) != len(messages):
            self._check_errors(messages)
        return cast(list[MessageLike], records)  # a Message is a MessageLike (no stubs)

    def _store_pending(self, client: Consumer) -> None:
        """Store the offsets the loop settled, for partitions still owned."""
        if self._listener is None:
            return
        pending = self._listener.take()
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in pending.items() if (t, p) in self._owned
        ]
        if offsets:
            try:
                client.store_offsets(offsets=offsets)
            except KafkaException as exc:  # e.g. a partition lost meanwhile: redone later
                log.warning("could not store offsets %s: %s", _fmt(offsets), exc)

    def _commit(self, client: Consumer) -> None:
        """Commit stored offsets synchronously."""
        if not self._owned:
            return
        try:
            client.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    def _close(self, client: Consumer) -> None:
        """Store, commit, leave the group (the revoke callback settles once more), close."""
        self._store_pending(client)
        self._commit(client)
        client.close()

    def _check_errors(self, messages: list[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                continue
            denied = authorization_error(
                err, group=self.group, topic=msg.topic(), action="consume", settings=self.settings
            )
            if denied is not None:  # it would never be allowed by waiting: stop, naming it
                raise denied
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)

    # --- rebalance callbacks (librdkafka calls them inside consume()) ------------------

    def _on_assign(self, _client: Consumer, partitions: list[TopicPartition]) -> None:
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self._owned |= owned
        log.info("%s assigned %s", self.instance_id, _fmt(partitions))
        if self._listener is not None:
            self._listener.assigned(owned)

    def _on_revoke(self, client: Consumer, partitions: list[TopicPartition]) -> None:
        # Settle in-flight deliveries on the loop (which never waits on this thread), then
        # store and commit here, on the thread that owns the consumer.
        loop, listener = self._loop, self._listener
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if loop is not None and listener is not None and loop.is_running():
            limit = self.settings.shutdown_timeout
            if self._close_deadline:
                limit = max(0.0, min(limit, self._close_deadline - time.monotonic()))
            future = asyncio.run_coroutine_threadsafe(listener.settle(limit, gone), loop)
            try:
                future.result(limit + 1)
            except Exception as exc:  # a revoke must go on: what is unsettled is redone
                future.cancel()
                log.warning("settling before revoke failed: %r", exc)
        self._store_pending(client)
        self._commit(client)
        self._owned -= gone
        log.info("%s revoked %s", self.instance_id, _fmt(partitions))
        if listener is not None:
            listener.revoked(gone)

    def _on_lost(self, _client: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._owned -= gone
        log.warning(
            "%s lost %s (their uncommitted work will be redone)",
            self.instance_id,
            _fmt(partitions),
        )
        if self._listener is not None:
            self._listener.lost(gone)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
