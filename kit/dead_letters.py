"""Dead letters: the kit-dlt-* headers that say why and whence, and how much of a value fits."""

from __future__ import annotations

import logging
import traceback

from kit.errors import DecodeError, DeliveryRefused
from kit.protocol import TRUNCATED, Headers, MessageLike
from kit.service import Handler

__all__ = [
    "RECORD_OVERHEAD",
    "dead_letter_headers",
    "dead_letter_topic",
    "fit_value",
    "reason_of",
    "room_for_value",
]

log = logging.getLogger("kit.dispatch")

RECORD_OVERHEAD = 512
"""Bytes a record needs on the wire beyond its key, value and headers (batch and record
headers), with room to spare: used to decide whether a dead letter must be truncated."""


def dead_letter_topic(handler: Handler, suffix: str) -> str:
    """Where a handler's failed records go: its own `dead_letter_topic`, else its topic
    with KIT_DEAD_LETTER_SUFFIX (`suffix`) appended."""
    return handler.dead_letter_topic or f"{handler.topic}{suffix}"


def reason_of(exc: BaseException) -> str:
    """The kit-dlt-reason of a failure: "decode", "delivery" or "handler"."""
    if isinstance(exc, DecodeError):
        return "decode"
    if isinstance(exc, DeliveryRefused):
        return "delivery"
    return "handler"


def dead_letter_headers(
    msg: MessageLike,
    exc: BaseException,
    attempts: int,
    service: str,
    group: str,
    handler: str,
) -> Headers:
    """The kit-dlt-* headers added to a dead-lettered record (after its own headers)."""
    reason = reason_of(exc)
    _ts_type, ts = msg.timestamp()
    extra = [
        ("kit-dlt-reason", reason.encode()),
        ("kit-dlt-exception-type", type(exc).__qualname__.encode()),
        ("kit-dlt-exception-message", str(exc).encode(errors="replace")[:4096]),
        ("kit-dlt-original-topic", (msg.topic() or "").encode()),
        ("kit-dlt-original-partition", str(msg.partition()).encode()),
        ("kit-dlt-original-offset", str(msg.offset()).encode()),
        ("kit-dlt-original-timestamp", str(ts).encode()),
        ("kit-dlt-attempts", str(attempts).encode()),
        ("kit-dlt-service", service.encode()),
        ("kit-dlt-group", group.encode()),
        ("kit-dlt-handler", handler.encode()),
    ]
    if reason == "handler":
        stack = "".join(traceback.format_exception(exc))[-8192:]
        extra.append(("kit-dlt-stacktrace", stack.encode(errors="replace")))
    return extra


def room_for_value(
    value: bytes | None,
    key: bytes | None,
    headers: Headers,
    limit: int | None,
    max_value: int | None = None,
) -> int:
    """How many value bytes a dead letter with this key and these headers may keep under
    the topic's record `limit` (None: no limit) and `max_value` (None: no cap)."""
    if value is None:
        return 0
    header_bytes = sum(len(k) + len(v or b"") for k, v in headers)
    fixed = len(key or b"") + header_bytes + RECORD_OVERHEAD
    room = len(value) if limit is None else max(0, limit - fixed - 64)
    return room if max_value is None else min(room, max_value)


def fit_value(
    msg: MessageLike, headers: Headers, limit: int | None, max_value: int | None, topic: str
) -> bytes | None:
    """The value of `msg`'s dead letter: whole if it fits `topic`'s record `limit` (and
    `max_value`), else cut to fit, with a kit-dlt-truncated header (the original size)
    appended to `headers`."""
    value = msg.value()
    room = room_for_value(value, msg.key(), headers, limit, max_value)
    if value is None or len(value) <= room:
        return value
    headers.append((TRUNCATED, str(len(value)).encode()))
    log.warning(
        "dead letter of %s[%s]@%s cut from %d to %d value bytes to fit %s",
        msg.topic(),
        msg.partition(),
        msg.offset(),
        len(value),
        room,
        topic,
    )
    return value[:room]
