"""The commit rule: which offsets may be stored, and what a failed delivery costs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import KafkaError

from kit.config import Settings
from kit.context import Failure, Ticket
from kit.dispatch import RECORD_OVERHEAD, Dispatcher
from kit.errors import DeliveryError, DeliveryRefused
from kit.protocol import TRUNCATED, Sink
from kit.transport.diagnose import authorization_message
from kit.transport.kafka import describe_record
from kit.transport.sink import REFUSED, TOO_LARGE, KafkaSink, record_size

__all__ = ["Commits", "SlotTicket"]

log = logging.getLogger("kit.runtime")


Partition = tuple[str, int]


class SlotTicket(Ticket):
    """The records of one partition in a fetched batch (kit.lanes): settled, in order,
    after the older tickets of its partition only."""

    __slots__ = ("slot",)

    def __init__(self, slot: Partition, records: int) -> None:
        super().__init__(records)
        self.slot = slot
        """(topic, partition) of every record in it."""


class Commits:
    """The fetched batches in flight, oldest first, and the offsets they may store.

    A batch's offsets are handed to the consumer thread (`take()`) only when it is handled
    and every record it emitted is confirmed, and only after every older batch (for a
    `SlotTicket`, every older batch of its partition). A delivery
    the broker refused for good dead-letters the input record it came from; any other
    failure keeps the batch at the head of the queue and raises DeliveryError, so nothing
    at or after it is ever stored. Everything but `take` and `drop` runs on the event loop;
    those two run on the consumer thread, behind a lock.
    """

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        sink: Sink,
        poll: Callable[[float], int],
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.sink = sink
        self._poll = poll
        self.tickets: deque[Ticket] = deque()
        self.failed: DeliveryError | None = None
        """Set once a delivery failed for good: the service must stop."""
        self._lock = threading.Lock()
        self._to_store: dict[Partition, int] = {}
        self._settling = asyncio.Lock()

    # --- the consumer thread ---------------------------------------------------------

    def take(self) -> dict[Partition, int]:
        """The offsets settled since the last call (consumer thread)."""
        with self._lock:
            taken, self._to_store = self._to_store, {}
        return taken

    def drop(self, partitions: set[Partition]) -> None:
        """Forget settled offsets of partitions this instance lost (consumer thread)."""
        with self._lock:
            for tp in partitions:
                self._to_store.pop(tp, None)

    # --- the event loop --------------------------------------------------------------

    def drain(self) -> Ticket | None:
        """Hand the offsets of finished batches to the consumer thread, oldest first.

        A `SlotTicket` (one partition's share of a batch, kit.lanes) waits only for older
        tickets of its partition and for older whole batches; a whole batch (`Ticket`)
        waits for every older ticket. Returns the first ticket with failed deliveries that
        is otherwise free to go (`resolve` must look at it before anything after it of its
        partitions may be stored), else None.
        """
        tickets = self.tickets
        settled: dict[Partition, int] = {}
        while tickets and tickets[0].done and not tickets[0].failures:
            self._settled(tickets.popleft(), settled)
        blocked = self._drain_rest(settled) if tickets else None
        if settled:
            with self._lock:
                self._to_store.update(settled)
        return blocked

    def _drain_rest(self, settled: dict[Partition, int]) -> Ticket | None:
        """Pop the finished tickets behind an unfinished head that no older ticket holds."""
        tickets = self.tickets
        held: set[Partition] = set()
        kept: list[Ticket] = []
        blocked: Ticket | None = None
        barrier = popped = False
        for ticket in tickets:
            slot = ticket.slot if isinstance(ticket, SlotTicket) else None
            free = not barrier and (slot not in held if slot is not None else not kept)
            if free and ticket.done:
                if not ticket.failures:
                    self._settled(ticket, settled)
                    popped = True
                    continue
                blocked = blocked or ticket
            kept.append(ticket)
            if slot is None:
                barrier = True
            else:
                held.add(slot)
        if popped:
            tickets.clear()
            tickets.extend(kept)
        return blocked

    def _settled(self, ticket: Ticket, settled: dict[Partition, int]) -> None:
        if ticket.dropped:
            self.dispatcher.replies.dropped += ticket.dropped
            log.warning(
                "%d replies not delivered (requester gone, or the producer refused them)",
                ticket.dropped,
            )
        settled.update(ticket.offsets)

    async def settle(self) -> None:
        """Store what is finished; resolve failed deliveries that hold it up (may raise).

        One settle at a time (the loop's, a revoke's or the close's): a failed batch is
        being resolved across awaits, and nothing may pop it meanwhile."""
        async with self._settling:
            while (blocked := self.drain()) is not None:
                if self.failed is not None:
                    raise self.failed
                await self.resolve(blocked)
                if not blocked.done:
                    return

    async def resolve(self, ticket: Ticket) -> None:
        """Dead-letter the input of each record the broker refused for good; on any other
        failure, keep the batch at the head of the queue and raise DeliveryError."""
        failures, ticket.failures = ticket.failures, []
        self.dispatcher.stats.delivery_errors += len(failures)
        try:
            await self._dead_letter_refused(ticket, failures)
        except BaseException as exc:
            # Not resolved (cancelled, or the dead letter could not even be queued): the
            # batch keeps its failures at the head, so nothing at or after it is stored.
            ticket.failures = failures + ticket.failures
            if self.failed is None and not isinstance(exc, asyncio.CancelledError):
                self.failed = DeliveryError(f"dead-lettering a refused record failed: {exc}")
            raise

    async def _dead_letter_refused(self, ticket: Ticket, failures: list[Failure]) -> None:
        seen: set[tuple[str | None, int | None, int | None]] = set()
        for failure in failures:
            source = failure.source
            verdict = await self.verdict(failure)
            if isinstance(verdict, str) or source is None:
                reason = verdict if isinstance(verdict, str) else "no input record known"
                where = "an unknown record" if source is None else describe_record(source)
                self.failed = DeliveryError(f"{reason}; offsets not committed from {where} on")
                log.error("stopping: %s", self.failed)
                raise self.failed
            key = (source.topic(), source.partition(), source.offset())
            if key in seen:
                continue
            seen.add(key)
            handler = self.dispatcher.by_topic[source.topic() or ""]
            max_value = 0 if failure.kind == "dead-letter" else None
            await self.dispatcher.dead_letter(
                source, handler, verdict, 1, ticket, max_value=max_value
            )

    async def verdict(self, failure: Failure) -> DeliveryRefused | str:
        """DeliveryRefused when the refused record can be dead-lettered in its place; else
        why the service must stop."""
        err, produced = failure.error, failure.produced
        code = err.code() if isinstance(err, KafkaError) else None
        topic = produced.topic() if produced is not None else "?"
        text = err.str() if isinstance(err, KafkaError) else str(err)
        if failure.kind == "dead-letter":
            headers = (produced.headers() or []) if produced is not None else []
            emptied = any(k == TRUNCATED for k, _v in headers) and not produced.value()
            if code in TOO_LARGE and not emptied:
                return DeliveryRefused(f"dead letter refused by {topic}: {text}")
            return f"cannot dead-letter to {topic}: {text}"
        if code in TOO_LARGE and produced is not None:
            return await self._too_large(topic, record_size(produced), text)
        if code in REFUSED:
            return DeliveryRefused(f"{topic} refused a record: {text}")
        denied = authorization_message(err, topic=topic, action="produce", settings=self.settings)
        return denied or f"publishing to {topic} failed: {text}"

    async def _too_large(self, topic: str, size: int, text: str) -> DeliveryRefused | str:
        """Kafka checks max.message.bytes against whole batches: a record that fits was
        refused with its batch, which no dead letter can mend."""
        sink = self.sink
        known = sink.limits if isinstance(sink, KafkaSink) else {}
        if isinstance(sink, KafkaSink) and topic not in known:
            await asyncio.to_thread(sink.learn_limits, [topic])
        limit = sink.record_limit(topic) or 0
        if topic not in known:  # no DescribeConfigs: take the record as too large
            log.warning(
                "cannot read max.message.bytes of %s (no DescribeConfigs?): a %d-byte record "
                "it refused is taken as too large, not as part of a batch that was",
                topic,
                size,
            )
            return DeliveryRefused(f"{topic} refused a {size}-byte record: {text}")
        if size + RECORD_OVERHEAD <= limit:
            return (
                f"topic {topic} refused a batch of records that each fit its limit of "
                f"{limit} bytes ({text}): its max.message.bytes is below the producer's "
                f"batch.size; set KIT_KAFKA_BATCH_SIZE below {limit}"
            )
        return DeliveryRefused(
            f"{topic} refused a {size}-byte record (limit {limit} bytes): {text}"
        )

    async def quiesce(self, timeout: float, partitions: set[Partition] | None = None) -> None:
        """Wait (bounded) until every batch in flight (of `partitions`, when given: those
        and the whole batches) is confirmed and settled."""
        deadline = time.monotonic() + timeout
        while True:
            self._poll(0)
            try:
                await self.settle()
            except DeliveryError:
                return
            if not self._holding(partitions):
                return
            if time.monotonic() >= deadline:
                log.error(
                    "%d batches still unconfirmed after %.1fs; their offsets are not stored",
                    len(self.tickets),
                    timeout,
                )
                return
            await asyncio.sleep(0.005)  # delivery reports arrive as the producer is polled

    def _holding(self, partitions: set[Partition] | None) -> bool:
        """Whether a ticket of `partitions` (None: any), or a whole batch, is unsettled."""
        if partitions is None:
            return bool(self.tickets)
        return any(not isinstance(t, SlotTicket) or t.slot in partitions for t in self.tickets)
