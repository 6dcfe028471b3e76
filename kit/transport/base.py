"""What a runtime runs on: one consuming interface, one producing side, for Kafka and memory.

A `Runtime` (kit.runtime) drives its loop over a `Transport`: Kafka in production
(`kit.transport.kafka_transport.KafkaTransport`), memory in the `Harness`
(`kit.transport.memory.MemoryTransport`). The loop, the commit rule, dispatch and
shutdown are the same code on both; only these interfaces differ. To add a transport,
implement `Transport` and its `Consuming`, and pass it as `Runtime(..., transport=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from kit.config import Settings
from kit.protocol import MessageLike, Sink
from kit.schema import Schema
from kit.service import Handler, Service

__all__ = ["Consuming", "Partition", "Rebalance", "Transport"]

Partition = tuple[str, int]
"""(topic, partition)."""


class Rebalance(Protocol):
    """What a consuming transport tells its runtime, and asks of it (the runtime is one).

    `assigned`, `revoked` and `lost` may be called from the transport's own thread; the
    runtime moves what they change onto its event loop. `settle` runs on the event loop.
    """

    def assigned(self, partitions: set[Partition]) -> None:
        """The instance now owns these partitions."""
        ...

    def revoked(self, partitions: set[Partition]) -> None:
        """These partitions were given up after `settle` and a commit."""
        ...

    def lost(self, partitions: set[Partition]) -> None:
        """These partitions were taken away without a chance to commit."""
        ...

    async def settle(self, timeout: float, partitions: set[Partition] | None = None) -> None:
        """Before a revoke of `partitions` (None: all): finish or abandon their handling and
        wait, at most `timeout` seconds, until what they emitted is confirmed, so that
        `take()` holds every offset that may be stored."""
        ...

    def take(self) -> dict[Partition, int]:
        """The offsets (next to read) settled since the last call: store them."""
        ...


class Consuming(Protocol):
    """The consuming side: fetch batches, store offsets, assignment events, pause/resume.

    Offsets are stored by the transport itself, from `Rebalance.take()`, before each
    fetch, before each revoke and at close, and only for partitions it still owns.
    """

    async def subscribe(self, topics: Sequence[str], listener: Rebalance) -> None:
        """Join the group for `topics`; assignment events go to `listener`."""
        ...

    async def fetch(self) -> Sequence[MessageLike]:
        """Store what `listener.take()` settled, then return the next batch (maybe empty).

        Raises a KitError (or the client's error) that must stop the runtime, such as a
        denied authorization; transient errors are logged and give an empty batch.
        """
        ...

    async def pause(self, partitions: Iterable[Partition]) -> None:
        """Fetch nothing more from these partitions until `resume`."""
        ...

    async def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch again from paused partitions."""
        ...

    async def close(self, timeout: float) -> None:
        """Store and commit what is settled, leave the group (a last revoke settles
        once more), and release the client; bounded by `timeout` seconds."""
        ...


class Transport(Protocol):
    """Everything a runtime runs on: its consumer, where it publishes, its schemas."""

    @property
    def consumer(self) -> Consuming:
        """The consuming side (ready once `open` returned)."""
        ...

    @property
    def sink(self) -> Sink:
        """Where handlers' events and dead letters go."""
        ...

    @property
    def reply_sink(self) -> Sink:
        """Where responders' replies go (the runtime's exactly-once sink is separate)."""
        ...

    async def open(
        self,
        service: Service,
        settings: Settings,
        *,
        group: str,
        instance_id: str,
        dead_letter_topic: Callable[[Handler], str],
        auto_commit: bool = True,
    ) -> None:
        """Connect, and create or check the service's topics and dead-letter topics."""
        ...

    def poll(self, timeout: float) -> int:
        """Serve delivery reports (their callbacks run here, on the event loop)."""
        ...

    async def lookup(self, fingerprint: bytes) -> Schema | None:
        """A writer schema the codec does not know, by writer key: an 8-byte fingerprint
        or a 5-byte schema registry header (None: unknown)."""
        ...

    async def publish_schemas(self, schemas: Iterable[Schema]) -> Mapping[bytes, bytes] | None:
        """Make the service's writer schemas known to every reader; with the schema
        registry format, the header of each (fingerprint -> 5 bytes) for the codec."""
        ...

    async def close(self) -> None:
        """Release the producing side and schema reader (after the consumer's close)."""
        ...
