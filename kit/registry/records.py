"""What one registry record says: a Registration, or a tombstone (Removal) with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from kit.codec import Codec
from kit.errors import DecodeError
from kit.registry.model import HEADER_HEARTBEAT, HEADER_REASON, Registration

__all__ = ["Removal", "UnreadableRecord", "read_record"]


@dataclass(frozen=True)
class Removal:
    """A tombstone: the instance that went, why, and the heartbeat (ms) it was judged by."""

    instance_id: str
    reason: str
    judged: int | None


class UnreadableRecord(Exception):
    """A registry record that says nothing usable; readers skip it (the message says why)."""


def read_record(msg: Message, codec: Codec) -> Registration | Removal:
    """The registration or removal `msg` carries; raises UnreadableRecord for anything else.

    The key is the instance id. A null value is a tombstone whose headers give the reason
    (default "stopped") and the heartbeat it was judged by; any other value must decode to
    a Registration of that same instance.
    """
    key = msg.key()
    if key is None:
        raise UnreadableRecord("record without a key")
    instance_id = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    value = msg.value()
    if value is None:
        headers = dict(msg.headers() or [])
        reason = _text(headers.get(HEADER_REASON)) or "stopped"
        return Removal(instance_id, reason, _int_header(headers.get(HEADER_HEARTBEAT)))
    try:
        reg = codec.decode(value, Registration)
    except DecodeError as exc:
        raise UnreadableRecord(str(exc)) from None
    if reg.instance_id != instance_id:
        raise UnreadableRecord(f"key {instance_id!r} differs from instance_id {reg.instance_id!r}")
    return reg


def _text(raw: str | bytes | None) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


def _int_header(raw: str | bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
