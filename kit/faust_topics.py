"""kit events in Faust topics: the codec, the topic's schema and the topic (kit.faust).

`KitCodec` (kit's wire format as a Faust codec of one Event type), `KitSchema` (its decode
looks an unknown writer schema up first; a look-up that fails is a decode error, never an
exception that stops the agent), `KitTopic` (dead-letters what does not decode, publishes
or registers writer schemas before encoding and sending). `KitBridge` (kit.faust) makes
them; guide: docs/faust.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import faust
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs
from faust.types import AppT
from faust.types.tuples import Message as FaustMessage

from kit.codec import Codec
from kit.errors import DecodeError, EncodeError
from kit.event import Event
from kit.protocol import Headers

if TYPE_CHECKING:
    from kit.faust import KitBridge

__all__ = ["KitCodec", "KitSchema", "KitTopic", "WriterSchemaLookupFailed"]


class WriterSchemaLookupFailed(DecodeError):
    """A record's writer schema could not be looked up (the schema topic could not be
    read, or the schema registry asked): the record is handled as one that does not decode
    (dead letter, error reply)."""


class KitCodec(codecs.Codec):
    """A Faust codec of one kit Event type, in kit's wire format: `dumps` is `kit.Codec.encode`
    (of an `event_type` only; the registry format once `codec` has its schema's id),
    `loads` decodes into `event_type` through Avro schema resolution, with writer schemas
    `codec` knows (`KitBridge.topic` looks others up)."""

    def __init__(
        self,
        event_type: type[Event],
        codec: Codec | None = None,
        children: tuple[codecs.Codec, ...] | None = None,
    ) -> None:
        # Faust's clone() rebuilds a codec from its kwargs, so both go in there.
        super().__init__(children, event_type=event_type, codec=codec or Codec())
        self.event_type = event_type
        self.codec: Codec = self.kwargs["codec"]

    def _loads(self, s: bytes) -> Event:
        return self.codec.decode(s, self.event_type)

    def _dumps(self, s: object) -> bytes:
        if not isinstance(s, self.event_type):
            raise EncodeError(f"expected a {self.event_type.__qualname__}, got {type(s).__name__}")
        return self.codec.encode(s)


class KitSchema(faust.Schema[str, Event]):
    """Faust's schema of a topic of kit events: str keys, `KitCodec` values; its decode
    looks an unknown writer schema up (schema topic, worker thread) before Faust decodes."""

    def __init__(self, event_type: type[Event], bridge: KitBridge) -> None:
        super().__init__(key_type=str, value_serializer=KitCodec(event_type, bridge.codec))
        self.event_type = event_type
        self.bridge = bridge

    # Any: Faust's compile() keywords and decode function, passed through unchanged
    def compile(self, app: AppT, **options: Any) -> Callable[..., Awaitable[Any]]:
        """Faust's decode function, preceded by the writer schema's look-up."""
        decode, bridge, reader = super().compile(app, **options), self.bridge, self.event_type
        on_error = options.get("on_value_decode_error")
        propagating = bool(options.get("default_propagate", False))

        # Any: Faust's event (EventT) or None for a record it skips
        async def resolving(message: FaustMessage, *, propagate: bool = propagating) -> Any:
            try:
                await bridge.resolve(message.value, reader)
            except Exception as exc:  # as Faust's own decode error: then dead-lettered
                error = ValueDecodeError(str(exc))
                if propagate:
                    raise error from exc
                error.__cause__ = exc
                if on_error is not None:
                    await on_error(error, message)
                return None
            return await decode(message, propagate=propagate)

        return resolving


class KitTopic(faust.Topic):
    """A Faust topic of kit events (`KitBridge.topic`). Before it encodes and sends a record
    it makes sure the record's writer schema is on the schema topic (or registered, and its
    id known to the codec, with KIT_SCHEMA_REGISTRY_URL), as kit's producers do. A record
    that does not decode goes to `<topic>.dlt` with kit's headers, and the agent goes on
    (Faust's default crashes the agent, whose restart then receives nothing)."""

    async def on_value_decode_error(self, exc: Exception, message: FaustMessage) -> None:
        """Dead-letter the record (Faust has acked it already) instead of crashing."""
        schema = self.schema
        if not isinstance(schema, KitSchema):
            return await super().on_value_decode_error(exc, message)
        await schema.bridge.dead_letter(_Record(message), exc.__cause__ or exc, "faust-agent")

    # Any: Faust's send keywords (key, value, headers, ...) and its awaitable of RecordMetadata
    async def send(self, **kwargs: Any) -> Any:
        """Publish (or register) the writer schema (once), then Faust's `send`, which
        encodes: in the registry format, the codec needs the schema's id first."""
        schema = self.schema
        if isinstance(schema, KitSchema):
            await schema.bridge.publish_schemas([schema.event_type.kit_schema()])
        return await super().send(**kwargs)

    # Any: Faust's FutureMessage in, its awaitable of RecordMetadata out
    async def publish_message(self, fut: Any, wait: bool = False) -> Any:
        """Publish the writer schema (once), then the record (Faust's `publish_message`)."""
        schema = self.schema
        if isinstance(schema, KitSchema):
            await schema.bridge.publish_schemas([schema.event_type.kit_schema()])
        return await super().publish_message(fut, wait=wait)


class _Record:
    """A Faust message seen as kit's `MessageLike`, for kit's header and dead-letter helpers."""

    __slots__ = ("_message", "key", "offset", "partition", "topic", "value")

    def __init__(self, message: FaustMessage) -> None:
        self._message = message
        self.topic: Callable[[], str | None] = lambda: message.topic
        self.partition: Callable[[], int | None] = lambda: message.partition
        self.offset: Callable[[], int | None] = lambda: message.offset
        self.key: Callable[[], bytes | None] = lambda: message.key
        self.value: Callable[[], bytes | None] = lambda: message.value

    def headers(self) -> Headers | None:
        raw = self._message.headers
        items = raw.items() if isinstance(raw, Mapping) else raw or ()
        return [(str(k), bytes(v or b"")) for k, v in items] or None

    def timestamp(self) -> tuple[int, int]:
        return self._message.timestamp_type, int(self._message.timestamp * 1000)
