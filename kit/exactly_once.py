"""Exactly-once processing: each fetched batch is one Kafka transaction (KIP-447)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kit.config import load_tool_settings
from kit.context import Failure, MessageLike, Ticket
from kit.errors import ConfigError, DeliveryError, DeliveryRefused
from kit.transport.consumer import KafkaConsumer
from kit.transport.diagnose import authorization_error
from kit.transport.kafka import make_producer
from kit.transport.sink import KafkaSink

if TYPE_CHECKING:
    from kit.runtime import Runtime

__all__ = ["Transactions", "transactional_id"]

log = logging.getLogger("kit.exactly_once")

_SLOTS = 256
_FENCES_ALLOWED = 3
"""Fenced this many times within a minute, the instance stops: two live producers share
one transactional id (set KIT_TRANSACTIONAL_ID per instance, or leave it unset)."""


def transactional_id(
    group: str, explicit: str | None, lock_dir: Path | None = None
) -> tuple[str, IO[str] | None]:
    """This instance's transactional id, and the lock file that keeps it ours.

    `explicit` (KIT_TRANSACTIONAL_ID) wins. Otherwise the id is `kit-<group>-<host>-<slot>`
    with the lowest slot no other live process on this host holds (an flock on
    `~/.cache/kit/txn/`): a restarted instance gets its old id back, so its first
    `init_transactions` aborts whatever its crashed predecessor left open, at once rather
    than after `transaction.timeout.ms`.
    """
    if explicit:
        return explicit, None
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    folder = lock_dir or load_tool_settings().cache_root / "txn"
    folder.mkdir(parents=True, exist_ok=True)
    safe_group = re.sub(r"[^A-Za-z0-9._-]", "_", group)
    for slot in range(_SLOTS):
        handle = open(folder / f"{safe_group}-{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        return f"kit-{group}-{host}-{slot}", handle
    raise ConfigError(
        "KIT_TRANSACTIONAL_ID", f"all {_SLOTS} transactional id slots of {group} are taken"
    )


class Transactions:
    """Consume-transform-produce inside Kafka transactions for one runtime.

    Per fetched batch: begin a transaction, handle the batch (events and dead letters are
    produced in it), send the batch's next offsets with the consumer's group metadata
    (`send_offsets_to_transaction`, KIP-447, so a member that lost its partitions is
    fenced by the group), commit. Readers with `isolation.level=read_committed` (the
    librdkafka default) see a batch's outputs exactly when its offsets are committed.

    On an abortable error the transaction is aborted and the batch's partitions rewound
    to its first offsets, so the batch is handled again. A record whose output the broker
    refused for good is remembered and dead-lettered in its place on the second pass. A
    fenced producer is replaced (a new epoch); fenced repeatedly, the instance stops.
    The transactional producer carries only the batch's records: requests and replies go
    through the runtime's plain producer, because a request inside an open transaction
    would stay invisible to its responder until the caller's own commit.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.id, self._lock = transactional_id(runtime.group, runtime.settings.transactional_id)
        self.producer: Producer | None = None
        self.timeout = max(self.settings.delivery_timeout, 10.0)
        self._poison: dict[tuple[str, int, int], tuple[DeliveryRefused, int | None]] = {}
        """Records whose output the broker refused: dead-lettered in their place on the next
        pass (with the largest value their dead letter may keep, None: all of it)."""
        self._fenced: list[float] = []
        self.committed = 0
        """Transactions committed."""
        self.aborted = 0
        """Transactions aborted (their batches were handled again)."""
        self.open = False
        """True from begin to commit or abort of a batch's transaction."""

    def _make_producer(self) -> Producer:
        producer = make_producer(
            self.settings,
            message_max_bytes=self.runtime._kafka().sink.producer_limit,
            transactional_id=self.id,
        )
        try:
            producer.init_transactions(self.timeout)
        except KafkaException as exc:
            denied = authorization_error(
                exc, transactional_id=self.id, action="produce", settings=self.settings
            )
            if denied is not None:
                raise denied from None
            raise DeliveryError(f"cannot start transactions as {self.id}: {exc}") from None
        return producer

    async def start(self) -> Producer:
        """Make the transactional producer and init its transactions (off the loop)."""
        self.producer = await asyncio.to_thread(self._make_producer)
        log.info("%s: exactly-once, transactional id %s", self.runtime.instance_id, self.id)
        for handler in self.runtime.service.handlers:
            if (handler.key_concurrency or 1) > 1:
                log.warning(
                    "%s: key_concurrency is not used under exactly-once: each batch runs "
                    "in order, in its transaction",
                    handler.name,
                )
        return self.producer

    def close(self) -> None:
        """Release the transactional id slot."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def run_batch(self, records: Sequence[MessageLike]) -> None:
        """Handle one fetched batch in one transaction; raises DeliveryError to stop."""
        producer = self.producer
        assert producer is not None
        runtime = self.runtime
        producer.begin_transaction()
        self.open = True
        ticket = Ticket()
        try:
            if self._poison:
                await self._handle_with_poison(records, ticket)
            else:
                await runtime.dispatcher.handle_batch(records, ticket)
        finally:
            ticket.closed = True
            runtime.dispatcher.replies.flush()  # now, on the loop: the consumer thread
            # polls their producer next (kit.protocol.TurnBatch)
        offsets = dict(ticket.offsets)
        try:
            await self._consumer().call(self._commit, producer, ticket, offsets)
        except KafkaException as exc:
            await self._recover(exc.args[0], ticket, records)
            return
        finally:
            self.open = False
        self.committed += 1
        for key in [
            k for k in self._poison if (k[0], k[1]) in offsets and k[2] < offsets[(k[0], k[1])]
        ]:
            del self._poison[key]

    def _commit(
        self, producer: Producer, ticket: Ticket, offsets: dict[tuple[str, int], int]
    ) -> None:
        """On the consumer thread (it owns the group metadata): wait for every delivery
        report, then send the offsets and commit.

        A refused record fails the transaction; its report must be in the ticket before
        the abort, so that the record can be dead-lettered on the second pass. A
        retriable error repeats the same call until the deadline: aborting a commit that
        may have reached the coordinator and handling the batch again would duplicate it.
        """
        consumer = self._consumer().client
        assert consumer is not None
        deadline = time.monotonic() + self.timeout
        # Not flush(): once one record is refused the transaction must be aborted, and the
        # others get no report until the abort purges them (flush would wait it out).
        plain = self.runtime.producer  # replies go through it, counted in the ticket too;
        # the loop, which polls it otherwise, is waiting for this call
        while ticket.pending > 0 and not _causes(ticket) and time.monotonic() < deadline:
            producer.poll(0.05)
            plain.poll(0)
        if ticket.pending > 0 or ticket.failures:
            causes = _causes(ticket) or ticket.failures
            err = causes[0].error if causes else None
            raise KafkaException(
                err
                if isinstance(err, KafkaError)
                else KafkaError(KafkaError._TIMED_OUT, f"{ticket.pending} records unconfirmed")
            )
        if offsets:
            positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            metadata = consumer.consumer_group_metadata()
            _retrying(
                lambda: producer.send_offsets_to_transaction(positions, metadata, self.timeout),
                deadline,
            )
        _retrying(lambda: producer.commit_transaction(self.timeout), deadline)

    async def _recover(self, err: object, ticket: Ticket, records: Sequence[MessageLike]) -> None:
        runtime = self.runtime
        failures = _causes(ticket)
        code = _code(err)
        fenced = code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
            isinstance(err, KafkaError) and err.fatal()
        )
        log.warning("transaction of %d records failed (%s); aborting", len(records), err)
        if fenced:
            self._note_fence(err)
            old, self.producer = self.producer, None
            del old
            self.producer = await asyncio.to_thread(self._make_producer)
        else:
            try:
                await self._consumer().call(self._abort)
            except KafkaException as exc:  # cannot abort: start over with a new producer
                log.warning("abort failed (%s); replacing the transactional producer", exc)
                self.producer = await asyncio.to_thread(self._make_producer)
        assert self.producer is not None
        sink = runtime.sink
        assert isinstance(sink, KafkaSink)
        sink.producer = self.producer  # a replaced producer: the sink sends with it
        self.aborted += 1
        for failure in failures:
            verdict = await runtime.commits.verdict(failure)
            source = failure.source
            if isinstance(verdict, str) or source is None:
                raise DeliveryError(f"{verdict}; transaction aborted, nothing committed")
            key = (source.topic() or "", source.partition() or 0, source.offset() or 0)
            # a refused dead letter is sent again cut to nothing (coordinates only)
            self._poison[key] = (verdict, 0 if failure.kind == "dead-letter" else None)
        consumer = self._consumer()
        await consumer.call(_rewind, consumer.client, records)

    def _consumer(self) -> KafkaConsumer:
        consumer = self.runtime.consumer
        assert isinstance(consumer, KafkaConsumer), "exactly-once runs on Kafka only"
        return consumer

    def _abort(self) -> None:
        assert self.producer is not None
        self.producer.abort_transaction(self.timeout)

    def _note_fence(self, err: object) -> None:
        now = time.monotonic()
        self._fenced = [t for t in self._fenced if now - t < 60] + [now]
        if len(self._fenced) >= _FENCES_ALLOWED:
            raise DeliveryError(
                f"transactional id {self.id} fenced {len(self._fenced)} times in a minute "
                f"({err}): another live producer uses it; give each instance its own "
                "KIT_TRANSACTIONAL_ID, or leave it unset"
            )
        log.warning("producer %s fenced (%s); starting a new epoch", self.id, err)

    async def _handle_with_poison(self, records: Sequence[MessageLike], ticket: Ticket) -> None:
        """Handle a batch in order, dead-lettering the records whose output was refused."""
        dispatcher = self.runtime.dispatcher
        segment: list[MessageLike] = []
        for msg in records:
            key = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            poisoned = self._poison.get(key)
            if poisoned is None:
                segment.append(msg)
                continue
            if segment:
                await dispatcher.handle_batch(segment, ticket)
                segment = []
            if dispatcher.stopping is not None and dispatcher.stopping.is_set():
                return  # a record before this one may have been left: go no further
            refused, max_value = poisoned
            handler = dispatcher.by_topic[key[0]]
            await dispatcher.dead_letter(msg, handler, refused, 1, ticket, max_value=max_value)
            ticket.offsets[(key[0], key[1])] = key[2] + 1
        if segment:
            await dispatcher.handle_batch(segment, ticket)


_CONSEQUENCES = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._STATE}
"""Reports of records an abort withdrew, or that produce() refused because the
transaction already had to abort: consequences of another record's failure."""


def _causes(ticket: Ticket) -> list[Failure]:
    """The failures of a transaction's own records, not their consequences."""
    return [f for f in ticket.failures if _code(f.error) not in _CONSEQUENCES]


def _code(err: object) -> int | None:
    return err.code() if isinstance(err, KafkaError) else None


def _retrying(call: Callable[[], object], deadline: float) -> None:
    """Run a transactional call, repeating it while it fails retriably before `deadline`."""
    while True:
        try:
            call()
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.retriable()) or time.monotonic() > deadline:
                raise
            log.info("transactional call failed retriably (%s); trying again", err)


def _rewind(consumer: Consumer | None, records: Sequence[MessageLike]) -> None:
    """On the consumer thread: seek each partition back to the batch's first record."""
    if consumer is None:
        return
    first: dict[tuple[str, int], int] = {}
    for msg in records:
        first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # no longer ours: its new owner starts from the commit
            log.info("not rewinding %s[%d]: %s", topic, partition, exc)
