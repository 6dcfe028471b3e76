"""Dead letters as data: their kit-dlt-* headers read back, `--where` filters, and the
choice of what a redrive sends where. No broker here: kit.dlt.reading and kit.dlt.redriving
feed these with records read from Kafka."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "DLT_PREFIX",
    "REASONS",
    "REDRIVEN_FROM",
    "WHERE_KEYS",
    "DeadLetter",
    "LetterHeaders",
    "Plan",
    "Redrive",
    "Where",
    "choose",
    "iso_time",
    "parse_marker",
    "parse_where",
]

DLT_PREFIX = "kit-dlt-"
"""Every header a dead letter gets on top of the original record's starts with this."""
REDRIVEN_FROM = "kit-redriven-from"
"""Header of a redriven record: the dead letter it came from, as DLT/PARTITION/OFFSET."""
REASONS = ("decode", "handler", "delivery")
"""The values of kit-dlt-reason (kit.dead_letters.reason_of)."""

LetterHeaders = list[tuple[str, bytes | None]]
"""A record's headers as read back (Kafka headers may have no value)."""


class _Record(Protocol):
    """What DeadLetter.of reads: a confluent_kafka.Message, or a kit.protocol.MessageLike."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...
    def headers(self) -> object: ...


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _headers(raw: object) -> LetterHeaders:
    """Headers as a list of (name, bytes or None), from a list of pairs or a dict."""
    pairs = raw.items() if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    return [(str(k), _bytes(v)) for k, v in pairs]


SKIP_ALREADY = "already redriven"
SKIP_SAME = "same record as another dead letter"
SKIP_TRUNCATED = "truncated"
SKIP_NO_TOPIC = "no original topic"
SKIP_MISSING = "target topic missing"


def iso_time(ms: int | None) -> str:
    """Epoch milliseconds as ISO-8601 UTC text with milliseconds ("-" when unknown)."""
    if ms is None or ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def parse_marker(text: str) -> tuple[str, int, int] | None:
    """A kit-redriven-from value as (DLT, partition, offset); None if it is not one."""
    topic, sep, rest = text.rpartition("/")
    dlt, sep2, partition = topic.rpartition("/")
    if not sep or not sep2 or not dlt:
        return None
    p, o = _int(partition), _int(rest)
    return None if p is None or o is None else (dlt, p, o)


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic: where it is, and what kit wrote about it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    """When it was dead-lettered (the DLT record's timestamp)."""
    key: bytes | None
    value: bytes | None
    headers: LetterHeaders = field(default_factory=list)

    @classmethod
    def of(cls, msg: _Record) -> DeadLetter:
        """The dead letter of a record read from a DLT."""
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=msg.timestamp()[1],
            key=_bytes(msg.key()),
            value=_bytes(msg.value()),
            headers=_headers(msg.headers()),
        )

    def header(self, name: str) -> str | None:
        """The last value of header `name` as text (kit's headers come last), or None."""
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode(errors="replace") if found and found[-1] is not None else None

    @property
    def marker(self) -> str:
        """DLT/PARTITION/OFFSET: the kit-redriven-from value of this letter's redrive."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def reason(self) -> str:
        """decode, handler or delivery; "none" for a record kit did not dead-letter."""
        return self.header("kit-dlt-reason") or "none"

    @property
    def exception(self) -> str:
        """ "Type: message" of the failure."""
        kind = self.header("kit-dlt-exception-type") or "?"
        message = self.header("kit-dlt-exception-message")
        return f"{kind}: {message}" if message else kind

    @property
    def original_topic(self) -> str | None:
        return self.header("kit-dlt-original-topic") or None

    @property
    def original_partition(self) -> int | None:
        return _int(self.header("kit-dlt-original-partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.header("kit-dlt-original-offset"))

    @property
    def original_timestamp_ms(self) -> int | None:
        return _int(self.header("kit-dlt-original-timestamp"))

    @property
    def truncated(self) -> int | None:
        """The original value's size when the dead letter holds a cut copy, else None."""
        return _int(self.header(f"{DLT_PREFIX}truncated"))

    @property
    def original(self) -> str:
        """topic[partition]@offset of the original record ("?" for what is not known)."""
        part, off = self.original_partition, self.original_offset
        return (
            f"{self.original_topic or '?'}[{'?' if part is None else part}]"
            f"@{'?' if off is None else off}"
        )

    @property
    def record_id(self) -> str:
        """The original record's identity: two dead letters of one record share it (the
        record failed twice, e.g. handled again after a crash). A letter whose origin is
        not known is its own record."""
        part, off = self.original_partition, self.original_offset
        if self.original_topic and part is not None and off is not None:
            return f"{self.original_topic}/{part}/{off}"
        return f"letter:{self.marker}"

    def original_headers(self) -> LetterHeaders:
        """The original record's headers: no kit-dlt-* ones, no earlier redrive marker."""
        return [
            (k, v) for k, v in self.headers if not k.startswith(DLT_PREFIX) and k != REDRIVEN_FROM
        ]

    def redrive_headers(self) -> LetterHeaders:
        """The original record's headers, then kit-redriven-from naming this letter."""
        return [*self.original_headers(), (REDRIVEN_FROM, self.marker.encode())]


WHERE_KEYS: dict[str, str] = {
    "reason": "kit-dlt-reason",
    "exception": "kit-dlt-exception-type",
    "topic": "kit-dlt-original-topic",
    "service": "kit-dlt-service",
    "group": "kit-dlt-group",
    "handler": "kit-dlt-handler",
}
"""What `--where KEY=VALUE` can test, and the header each key reads."""


@dataclass(frozen=True)
class Where:
    """A conjunction of KEY=VALUE[,VALUE...] terms; a term holds if the header has one of
    its values. No terms: every dead letter matches."""

    terms: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, letter: DeadLetter) -> bool:
        """True if every term holds for `letter` (a missing header holds for none)."""
        for key, values in self.terms:
            got = letter.header(WHERE_KEYS[key])
            if key == "reason":
                got = got or "none"
            if got not in values:
                return False
        return True

    def __str__(self) -> str:
        return " and ".join(f"{k}={','.join(sorted(v))}" for k, v in self.terms) or "all"


def parse_where(texts: Iterable[str]) -> Where:
    """`--where` values (KEY=VALUE, several values comma-separated) as one Where.

    ValueError, with what would be right, for an unknown key, a missing value, or a reason
    that is not decode, handler or delivery.
    """
    terms: list[tuple[str, frozenset[str]]] = []
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip().lower()
        values = frozenset(v.strip() for v in raw.split(",") if v.strip())
        if not sep or not values:
            raise ValueError(f"expected KEY=VALUE (e.g. reason=handler), got {text!r}")
        if key not in WHERE_KEYS:
            raise ValueError(f"unknown key {key!r} in {text!r}: use one of {', '.join(WHERE_KEYS)}")
        if key == "reason" and not values <= set(REASONS):
            wrong = ", ".join(sorted(values - set(REASONS)))
            raise ValueError(f"unknown reason {wrong}: use {', '.join(REASONS)}")
        terms.append((key, values))
    return Where(tuple(terms))


@dataclass(frozen=True)
class Redrive:
    """One dead letter to republish: to `target`, in `partition` (None: by its key)."""

    letter: DeadLetter
    target: str
    partition: int | None


@dataclass
class Plan:
    """What a redrive of one DLT sends where, and what it leaves, with why."""

    dlt: str
    where: Where = field(default_factory=Where)
    chosen: list[Redrive] = field(default_factory=list)
    skipped: dict[str, list[DeadLetter]] = field(default_factory=dict)
    """Matching letters not sent, by why: already redriven, same record as another, ..."""
    left_out: int = 0
    """Letters that --where did not match."""

    def targets(self) -> Counter[str]:
        """How many records go to each topic."""
        return Counter(r.target for r in self.chosen)

    def skip(self, why: str, letter: DeadLetter) -> None:
        self.skipped.setdefault(why, []).append(letter)


def choose(
    dlt: str,
    letters: Iterable[DeadLetter],
    where: Where,
    to: str | None,
    partitions: Mapping[str, int],
    redriven: Collection[tuple[str, str]],
) -> Plan:
    """The plan of a redrive, letters in DLT order.

    `partitions`: partition count of each existing topic; `redriven`: (topic, marker)
    pairs, a record carrying kit-redriven-from = marker found in that topic. A letter
    goes to `to`, else its original topic, into its original partition when it goes back
    to its own topic (else by key), unless: that topic is missing; a record of its redrive
    is there already; its original record is redriven there already (by an earlier letter
    of the same record); its value was cut to fit the DLT.
    """
    letters = list(letters)
    plan = Plan(dlt, where)
    done: set[tuple[str, str]] = set()  # (topic, original record) redriven there
    for letter in letters:
        target = to or letter.original_topic
        if target and (target, letter.marker) in redriven:
            done.add((target, letter.record_id))
    for letter in letters:
        if not where.matches(letter):
            plan.left_out += 1
            continue
        target = to or letter.original_topic
        if not target:
            plan.skip(SKIP_NO_TOPIC, letter)
        elif target not in partitions:
            plan.skip(SKIP_MISSING, letter)
        elif (target, letter.marker) in redriven:
            plan.skip(SKIP_ALREADY, letter)
        elif (target, letter.record_id) in done:
            plan.skip(SKIP_SAME, letter)
        elif letter.truncated is not None:
            plan.skip(SKIP_TRUNCATED, letter)
        else:
            done.add((target, letter.record_id))
            part = letter.original_partition
            same = target == letter.original_topic and part is not None
            keep = part if same and part is not None and part < partitions[target] else None
            plan.chosen.append(Redrive(letter, target, keep))
    return plan
