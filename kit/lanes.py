"""Partition lanes: each partition's records in order, partitions overlapping, memory bounded."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Protocol

from kit.commits import Commits, SlotTicket
from kit.config import Settings
from kit.context import Ticket
from kit.dispatch import Dispatcher
from kit.exactly_once import Transactions
from kit.protocol import MessageLike
from kit.transport.base import Consuming, Partition, Transport

__all__ = ["Lane", "Lanes"]

log = logging.getLogger("kit.runtime")

_WAKE = 0.005
"""Seconds between polls of delivery reports while the loop waits for room."""


class Host(Protocol):
    """What the lanes need of their runtime (kit.runtime.Runtime is one)."""

    settings: Settings
    commits: Commits
    dispatcher: Dispatcher
    consumer: Consuming
    transport: Transport
    transactions: Transactions | None
    assignment: set[Partition]

    @property
    def stopping(self) -> bool:
        """True once the runtime was asked to stop."""
        ...


class Lane:
    """One partition's fetched records, waiting in order, and the task handling them."""

    __slots__ = ("queue", "queued", "slot", "task")

    def __init__(self, slot: Partition) -> None:
        self.slot = slot
        self.queue: deque[tuple[SlotTicket, Sequence[MessageLike]]] = deque()
        self.queued = 0
        """Records waiting (not counting the share being handled)."""
        self.task: asyncio.Task[None] | None = None


class Lanes:
    """The runtime's loop body, with one lane (an asyncio task) per busy partition.

    Each fetched batch is split by partition into `SlotTicket`s (kit.commits), queued on
    their partition's lane: a lane handles its shares one after another, so a partition's
    records keep their order while partitions overlap (a handler that waits, waits once per
    partition). The loop fetches again while fewer than KIT_MAX_BATCHES_IN_FLIGHT batches' worth of
    records are unsettled, and pauses a partition whose lane has a whole batch waiting, so
    the next fetches bring the other partitions. Offsets are stored per partition below its
    first unfinished record (kit.commits). Stop, close, revoke and loss drop the shares
    not started (they are fetched again later: nothing past them is stored) and finish the
    one being handled, within the deadline, else cancel it. Every lane task belongs to
    this object and is awaited before `close` returns. Exactly-once runtimes handle each
    batch whole, in its transaction, as before.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.lanes: dict[Partition, Lane] = {}
        """Partitions with records waiting or being handled."""
        self.error: BaseException | None = None
        """What a lane raised (not a handler's failure: those retry or dead-letter)."""
        self.paused: set[Partition] = set()
        self._unpause: set[Partition] = set()
        """Paused when revoked or lost: resumed should they come back."""
        self._progress = asyncio.Event()
        settings = host.settings
        self.max_records = settings.max_batches_in_flight * settings.batch_size
        """Records fetched and not settled, at most (give or take one batch)."""
        self.pause_at = settings.batch_size
        """Records waiting in one lane from which its partition is paused."""

    # --- the loop body -------------------------------------------------------------

    async def turn(self, drain: bool) -> int:
        """Fetch a batch, queue it on its lanes (with `drain`, also wait until every lane
        is idle: the Harness's deterministic step), serve delivery reports, settle.
        Returns the number of records fetched."""
        host = self.host
        commits = host.commits
        if self.error is not None:  # nothing more is fetched: the runtime must stop
            raise self.error
        if not drain:
            await self._room()
            if host.stopping:
                return 0
            if self.paused or self._unpause or self.lanes:
                await self._flow()
        records = await host.consumer.fetch()
        if commits.failed is not None:  # a revoke found it while settling
            raise commits.failed
        if records:
            if host.transactions is not None:
                await host.transactions.run_batch(records)
            elif drain:
                await self.idle(self.submit(records))
            else:
                self.submit(records)
        if self.error is not None:
            raise self.error
        host.transport.poll(0)
        if commits.tickets:
            await commits.settle()
        return len(records)

    def submit(self, records: Sequence[MessageLike]) -> list[Lane]:
        """Queue each partition's share of a fetched batch on its lane, with its ticket;
        returns those lanes."""
        groups: dict[Partition, list[MessageLike]] = {}
        for msg in records:
            groups.setdefault((msg.topic() or "", msg.partition() or 0), []).append(msg)
        tickets = self.host.commits.tickets
        lanes: list[Lane] = []
        for slot, share in groups.items():
            ticket = SlotTicket(slot, len(share))
            tickets.append(ticket)
            lane = self.lanes.get(slot)
            if lane is None:
                lane = self.lanes[slot] = Lane(slot)
            lanes.append(lane)
            if lane.task is None:  # an idle lane takes it in hand at once
                lane.task = asyncio.create_task(
                    self._serve(lane, (ticket, share)), name=f"kit-lane-{slot[0]}-{slot[1]}"
                )
            else:
                lane.queue.append((ticket, share))
                lane.queued += len(share)
        return lanes

    def unsettled(self) -> int:
        """Records fetched whose offsets are not settled yet."""
        return sum(t.records for t in self.host.commits.tickets)

    async def _room(self) -> None:
        """Wait while the records in flight are at the bound, serving delivery reports."""
        host = self.host
        commits = host.commits
        while (
            self.unsettled() >= self.max_records
            and self.error is None
            and commits.failed is None
            and not host.stopping
        ):
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), _WAKE)
            except TimeoutError:
                pass
            host.transport.poll(0)
            await commits.settle()

    async def _flow(self) -> None:
        """Pause partitions with a whole batch waiting in their lane; resume the others."""
        want = {slot for slot, lane in self.lanes.items() if lane.queued >= self.pause_at}
        back = self.paused - want
        if self._unpause:
            returned = self._unpause & self.host.assignment
            back |= returned
            self._unpause -= returned
        new = want - self.paused
        consumer = self.host.consumer
        if new:
            await _call(consumer.pause, new, "pause")
            self.paused |= new
        if back:
            await _call(consumer.resume, back, "resume")
            self.paused -= back

    # --- the lanes -----------------------------------------------------------------

    async def _serve(self, lane: Lane, first: tuple[SlotTicket, Sequence[MessageLike]]) -> None:
        """Handle `first`, then the lane's waiting shares in order until none is left."""
        dispatcher = self.host.dispatcher
        handle = dispatcher.handle_partition
        declared = dispatcher.by_topic.get(lane.slot[0])
        keys = declared.key_concurrency if declared is not None else None
        if keys is not None and keys > 1:
            handle = partial(
                handle_by_key, dispatcher.handle_partition, limit=keys, stopped=self._stopped
            )
        queue, progress = lane.queue, self._progress
        ticket, share = first
        try:
            while True:
                try:
                    await handle(share, ticket)
                finally:
                    ticket.closed = True
                    progress.set()
                last = share[-1].offset()
                if ticket.offsets.get(lane.slot) != (last or 0) + 1 or self.host.stopping:
                    self._drop(lane)  # stopped short of its end (Abandoned), or stopping
                if not queue:
                    break
                ticket, share = queue.popleft()
                lane.queued -= len(share)
        except asyncio.CancelledError:
            self._drop(lane)
            raise
        except Exception as exc:  # nothing after the record it stopped at is handled
            log.error("handling %s[%d] failed: %r", *lane.slot, exc)
            if self.error is None:
                self.error = exc
            self._drop(lane)
        finally:
            lane.task = None
            if not queue and self.lanes.get(lane.slot) is lane:
                del self.lanes[lane.slot]

    def _stopped(self) -> bool:
        return self.host.stopping

    def _drop(self, lane: Lane) -> None:
        """Give up the shares not started: their tickets close with no offsets."""
        while lane.queue:
            ticket, _share = lane.queue.popleft()
            ticket.closed = True
        lane.queued = 0
        self._progress.set()

    async def idle(self, lanes: Iterable[Lane] | None = None) -> None:
        """Wait until these lanes (None: all) have no work, but for the one running this
        (a handler's request that the Harness answers at once turns the loop inside it)."""
        current = asyncio.current_task()
        chosen = list(self.lanes.values()) if lanes is None else list(lanes)
        while tasks := [x.task for x in chosen if x.task is not None and x.task is not current]:
            await asyncio.wait(tasks)
            if lanes is None:
                chosen = list(self.lanes.values())

    async def release(self, partitions: Iterable[Partition] | None, timeout: float) -> None:
        """Drop what waits in these lanes (None: all) and finish what they are handling
        within `timeout`, else cancel it (a revoke, a loss, the close)."""
        slots = list(self.lanes) if partitions is None else list(partitions)
        tasks = [task for slot in slots if (task := self._give_up(slot)) is not None]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning(
                "cancelling %d partitions' handling still running at the deadline", len(pending)
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def settle(self, timeout: float, partitions: set[Partition] | None) -> None:
        """Before a revoke of `partitions` (None: all): finish or abandon their lanes, then
        wait (bounded) until what they emitted is confirmed and their offsets settled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.release(partitions, timeout)
        await self.host.commits.quiesce(max(0.0, deadline - loop.time()), partitions)

    def lost(self, partitions: set[Partition]) -> None:
        """Partitions taken away (on the loop): drop what waits in their lanes."""
        self.host.assignment.difference_update(partitions)
        for slot in partitions:
            self._give_up(slot)

    def _give_up(self, slot: Partition) -> asyncio.Task[None] | None:
        """Drop what waits in `slot`'s lane (a paused partition is resumed should it come
        back); returns the task still handling its share, if any."""
        if slot in self.paused:
            self.paused.discard(slot)
            self._unpause.add(slot)
        lane = self.lanes.get(slot)
        if lane is None:
            return None
        self._drop(lane)
        return lane.task

    async def close(self, timeout: float) -> None:
        """Stop: drop what waits, finish what is being handled within `timeout`, else
        cancel it; every lane task has ended when this returns."""
        await self.release(None, timeout)
        await self.idle()


async def _call(
    fn: Callable[[Iterable[Partition]], Awaitable[None]], slots: set[Partition], what: str
) -> None:
    """Pause or resume: a failure (a partition just revoked, say) is logged, not raised."""
    try:
        await fn(sorted(slots))
    except Exception as exc:
        log.warning("could not %s %s: %r", what, sorted(slots), exc)


# Any: a Dispatcher.handle_partition (ticket, offsets)
async def handle_by_key(
    handle: Callable[..., Awaitable[None]],
    messages: Sequence[MessageLike],
    ticket: Ticket,
    *,
    limit: int,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Handle one partition's records in order per key, up to `limit` keys at a time.

    Each key's records run as one `handle` (in order); the ticket's offset is then put
    just below the lowest record not handled (every record before it is done), so a
    record still running, or given up at a stop, is fetched again, never skipped. Once
    `stopped()`, keys not yet started are not started: they are fetched again anyway.
    """
    slot = (messages[0].topic() or "", messages[0].partition() or 0)
    by_key: dict[bytes | None, list[MessageLike]] = {}
    for msg in messages:
        by_key.setdefault(msg.key(), []).append(msg)
    room = asyncio.Semaphore(limit)
    progress: list[tuple[list[MessageLike], dict[Partition, int]]] = [
        (records, {}) for records in by_key.values()
    ]

    async def run(records: list[MessageLike], done: dict[Partition, int]) -> None:
        async with room:
            if not stopped():
                await handle(records, ticket, done)

    try:
        async with asyncio.TaskGroup() as group:
            for records, done in progress:
                group.create_task(run(records, done))
    except BaseExceptionGroup as failed:  # what one key's handling raised, as without keys
        for other in failed.exceptions[1:]:
            log.error("handling %s[%d] failed too: %r", *slot, other)
        raise failed.exceptions[0] from None
    finally:
        unfinished = [
            next((o for m in records if (o := m.offset() or 0) >= done.get(slot, -1)), None)
            for records, done in progress
        ]
        lowest = min((o for o in unfinished if o is not None), default=None)
        if lowest is None:
            ticket.offsets[slot] = (messages[-1].offset() or 0) + 1
        elif lowest > (messages[0].offset() or 0):
            ticket.offsets[slot] = lowest
