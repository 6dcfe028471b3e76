"""Compatibility module: the request-reply names, now at their own homes.

The protocol (headers, reply checks, targets, the typed request API) is kit.requests; the
Kafka requester is kit.transport.requester. kit's own modules import from those.
"""

from __future__ import annotations

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
)
from kit.requests import (
    BaseRequester,
    LiveCheck,
    check_reply,
    reply_topic_name,
    request_headers,
    resolve_target,
)
from kit.transport.requester import Requester

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
    "Requester",
    "check_reply",
    "header",
    "reply_topic_name",
    "request_headers",
    "resolve_target",
]
