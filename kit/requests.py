"""The request-reply protocol: request headers, reply checks, targets, the typed request API.

No transport here: the Kafka requester is kit.transport.requester.Requester, the in-memory
one is the harness's. Both implement `BaseRequester.request_raw`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kit.codec import Codec, UnknownWriterSchema
from kit.errors import ConfigError, RemoteError
from kit.event import Event
from kit.protocol import (
    CORRELATION_ID,
    DEADLINE,
    ERROR_MESSAGE,
    ERROR_TRACE,
    ERROR_TYPE,
    MARKER,
    METHOD,
    REPLY_TO,
    REPLY_TOPIC_PREFIX,
    header,
    reply_headers,
    request_expired,
)
from kit.service import Caller, Endpoint

__all__ = [
    "CORRELATION_ID",
    "DEADLINE",
    "ERROR_MESSAGE",
    "ERROR_TRACE",
    "ERROR_TYPE",
    "MARKER",
    "METHOD",
    "REPLY_TO",
    "REPLY_TOPIC_PREFIX",
    "BaseRequester",
    "LiveCheck",
    "check_reply",
    "reply_headers",
    "reply_topic_name",
    "request_expired",
    "request_headers",
    "resolve_target",
]

R = TypeVar("R", bound=Event)
M = TypeVar("M")  # a record: confluent_kafka.Message, MemoryMessage


def reply_topic_name(instance_id: str) -> str:
    """The reply topic owned by one requesting instance."""
    return f"{REPLY_TOPIC_PREFIX}{instance_id}"


def request_headers(
    correlation_id: str | bytes,
    reply_topic: str | bytes,
    deadline_ms: int,
    service: str,
    method: str,
) -> list[tuple[str, bytes]]:
    """The headers that make a record a request: where to reply, to what, and by when
    (ids and topics may be given already encoded, as the Kafka requester does)."""
    return [
        (
            CORRELATION_ID,
            correlation_id if isinstance(correlation_id, bytes) else correlation_id.encode(),
        ),
        (REPLY_TO, reply_topic if isinstance(reply_topic, bytes) else reply_topic.encode()),
        (DEADLINE, b"%d" % deadline_ms),
        (METHOD, f"{service}.{method}".encode()),
    ]


class LiveCheck(Protocol):
    """What the requester asks the registry (kit.registry.Registry): is this service live?"""

    def has_live(self, service: str) -> bool: ...

    async def sync(self, timeout: float = 10.0) -> None: ...

    async def close(self) -> None: ...


class BaseRequester(Caller):
    """The typed request API over a transport's `request_raw`."""

    codec: Codec

    async def request_raw(
        self,
        service: str,
        method: str,
        value: bytes,
        *,
        topic: str | None = None,
        key: bytes | None = None,
        timeout: float | None = None,
        started: float | None = None,
    ) -> Any:  # Any: a confluent_kafka.Message (not imported here) or the harness's record
        """Send encoded request bytes; return the reply record (see Requester)."""
        raise NotImplementedError

    async def _request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form of request()
        event: Event,
        reply: type[Event] | None,
        timeout: float | None,
        key: str | bytes | None,
    ) -> Event:
        return await self.call(target, event, reply, timeout, key)

    async def call(
        self,
        target: str | Endpoint[Any, Any] | Callable[..., object],  # Any: any responder
        event: Event,
        reply: type[Event] | None = None,
        timeout: float | None = None,
        key: str | bytes | None = None,
        started: float | None = None,
    ) -> Event:
        """`request()` untyped, for callers that hold a target of either form: encode,
        send, wait, decode. `started` (time.monotonic()) is when the caller's deadline
        began, if earlier than now."""
        service, method, topic, reply_type = resolve_target(target, reply)
        raw = await self.request_raw(
            service,
            method,
            self.codec.encode(event),
            topic=topic,
            key=key.encode() if isinstance(key, str) else key,
            timeout=timeout,
            started=started,
        )
        try:  # the usual case, with no await: the reply's writer schema is known
            return self.codec.decode(raw.value(), reply_type)
        except UnknownWriterSchema:
            return await self.decode_reply(raw.value(), reply_type)

    async def decode_reply(self, value: bytes | None, reply_type: type[R]) -> R:
        """Decode a reply, first resolving its writer schema off the loop if the codec does
        not know it (e.g. the responder's registry id); UnknownWriterSchema if none has it."""
        try:
            return self.codec.decode(value, reply_type)
        except UnknownWriterSchema as exc:
            if not await self.codec.resolve(exc.fingerprint):
                raise
        return self.codec.decode(value, reply_type)


def check_reply(reply: M, service: str, method: str, corr: str) -> M:
    """Return the reply, or raise RemoteError when it carries the responder's error."""
    error = header(reply, ERROR_TYPE)
    if error is not None:
        message = (header(reply, ERROR_MESSAGE) or b"").decode(errors="replace")
        trace = header(reply, ERROR_TRACE)
        raise RemoteError(
            service,
            method,
            error.decode(),
            message,
            corr,
            trace.decode(errors="replace") if trace else None,
        )
    return reply


def resolve_target(
    target: str | Callable[..., object], reply: type[Event] | None
) -> tuple[str, str, str | None, type[Event]]:
    """(service, method, topic, reply type) of a request target."""
    declared = getattr(target, "__kit_responder__", None)
    if declared is not None:
        service_name, responder = declared
        return service_name, responder.name, responder.topic, reply or responder.reply_type
    if not isinstance(target, str) or "." not in target:
        raise ConfigError("target", f"expected a responder or 'service.method', got {target!r}")
    if reply is None:
        raise ConfigError("reply", f"request to {target!r} needs reply=<the reply Event class>")
    service_name, _, method = target.rpartition(".")
    return service_name, method, None, reply
