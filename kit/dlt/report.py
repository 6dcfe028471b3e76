"""How `kit dlt` shows dead letters: counts per topic, one letter as lines or JSON, the
decoded value, and a redrive's summary. No broker here."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kit.codec import Codec
from kit.dlt.letters import (
    REASONS,
    REDRIVEN_FROM,
    SKIP_TRUNCATED,
    DeadLetter,
    Plan,
    iso_time,
)
from kit.errors import KitError
from kit.jsonavro import to_json

__all__ = [
    "TopicCounts",
    "counts_json",
    "counts_table",
    "decode_value",
    "letter_json",
    "letter_lines",
    "redrive_lines",
]

# Any: every Any here is JSON data (a decoded value, a document to print).


@dataclass
class TopicCounts:
    """One dead-letter topic: its dead letters by reason, and the oldest and newest."""

    topic: str
    partitions: int
    reasons: Counter[str] = field(default_factory=Counter)
    oldest_ms: int | None = None
    newest_ms: int | None = None

    @property
    def records(self) -> int:
        return sum(self.reasons.values())

    def add(self, letter: DeadLetter) -> None:
        """Count one dead letter."""
        self.reasons[letter.reason] += 1
        ts = letter.timestamp_ms
        self.oldest_ms = ts if self.oldest_ms is None else min(self.oldest_ms, ts)
        self.newest_ms = ts if self.newest_ms is None else max(self.newest_ms, ts)


def counts_table(rows: Sequence[TopicCounts]) -> str:
    """The `kit dlt list` table: one line per topic, a column per reason (OTHER only when
    a topic holds records with no or another kit-dlt-reason)."""
    if not rows:
        return "no dead-letter topics"
    other = any(set(r.reasons) - set(REASONS) for r in rows)
    head = ["TOPIC", "RECORDS", *(r.upper() for r in REASONS), *(["OTHER"] if other else [])]
    head.append("NEWEST")
    table = [head]
    for row in rows:
        cells = [row.topic, str(row.records), *(str(row.reasons[r]) for r in REASONS)]
        if other:
            cells.append(str(sum(n for r, n in row.reasons.items() if r not in REASONS)))
        cells.append(iso_time(row.newest_ms))
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(w) if i in (0, len(head) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    return "\n".join(lines)


def counts_json(rows: Sequence[TopicCounts]) -> list[dict[str, Any]]:
    """The `kit dlt list --json` document."""
    return [
        {
            "topic": r.topic,
            "partitions": r.partitions,
            "records": r.records,
            "reasons": {**{reason: 0 for reason in REASONS}, **dict(r.reasons)},
            "oldest": iso_time(r.oldest_ms) if r.oldest_ms else None,
            "newest": iso_time(r.newest_ms) if r.newest_ms else None,
        }
        for r in rows
    ]


def decode_value(codec: Codec, letter: DeadLetter) -> tuple[Any, str | None]:
    """The letter's value decoded with its writer schema (found by fingerprint) as JSON
    data, and None; or None and why it cannot be decoded."""
    if letter.value is None:
        return None, "no value (a tombstone)"
    if letter.truncated is not None:
        return None, f"cut to {len(letter.value)} of {letter.truncated} bytes to fit the DLT"
    try:
        return to_json(codec.decode_any(letter.value)), None
    except KitError as exc:  # not single-object encoded, unknown writer schema, corrupt
        return None, str(exc)


def _key(key: bytes | None) -> dict[str, str | None]:
    if key is None:
        return {"key": None}
    try:
        return {"key": key.decode()}
    except UnicodeDecodeError:
        return {"key": None, "key_base64": base64.b64encode(key).decode()}


def letter_json(letter: DeadLetter, value: Any, error: str | None) -> dict[str, Any]:
    """One dead letter as a JSON document (`kit dlt show --json`, one per line)."""
    h = letter.header
    return {
        "dlt": {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset},
        "failed_at": iso_time(letter.timestamp_ms),
        "reason": letter.reason,
        "exception_type": h("kit-dlt-exception-type"),
        "exception_message": h("kit-dlt-exception-message"),
        "original": {
            "topic": letter.original_topic,
            "partition": letter.original_partition,
            "offset": letter.original_offset,
            "timestamp": iso_time(letter.original_timestamp_ms),
        },
        **_key(letter.key),
        "value": value,
        "value_error": error,
        "value_bytes": None if letter.value is None else len(letter.value),
        "truncated_from": letter.truncated,
        "attempts": h("kit-dlt-attempts"),
        "service": h("kit-dlt-service"),
        "group": h("kit-dlt-group"),
        "handler": h("kit-dlt-handler"),
        "headers": {k: (v or b"").decode(errors="replace") for k, v in letter.original_headers()},
        "redriven_from": h(REDRIVEN_FROM),
        "stacktrace": h("kit-dlt-stacktrace"),
    }


def letter_lines(letter: DeadLetter, value: Any, error: str | None) -> list[str]:
    """One dead letter for a person: where and when, why, whence, and its value."""
    h = letter.header
    why = " ".join(letter.exception.split())
    key = _key(letter.key)
    shown_key = json.dumps(key["key"]) if "key_base64" not in key else f"base64:{key['key_base64']}"
    lines = [
        f"{letter.topic}[{letter.partition}]@{letter.offset}  failed "
        f"{iso_time(letter.timestamp_ms)}  {letter.reason}: {why}",
        f"  original: {letter.original} of {iso_time(letter.original_timestamp_ms)}, "
        f"key {shown_key}",
        f"  by: service {h('kit-dlt-service') or '?'}, group {h('kit-dlt-group') or '?'}, "
        f"handler {h('kit-dlt-handler') or '?'}, {h('kit-dlt-attempts') or '?'} attempt(s)",
    ]
    if h(REDRIVEN_FROM):
        lines.append(f"  redriven from: {h(REDRIVEN_FROM)} (it failed again)")
    if error is None:
        lines.append(f"  value: {json.dumps(value, ensure_ascii=False)}")
    else:
        size = 0 if letter.value is None else len(letter.value)
        lines.append(f"  value: {size} bytes, not decoded: {error}")
    return lines


def redrive_lines(
    plan: Plan, delivered: Mapping[str, int] | None, prog: str = "kit dlt redrive"
) -> list[str]:
    """A redrive's summary: what went (`delivered`, per topic; None for a dry run, which
    lists each record it would send), and what was left, with why."""
    lines = []
    if delivered is None:
        for r in plan.chosen:
            where = r.target if r.partition is None else f"{r.target}[{r.partition}]"
            lines.append(
                f"{prog}: would redrive {r.letter.marker} ({r.letter.reason}, "
                f"{r.letter.original}) to {where}"
            )
        counts: Mapping[str, int] = plan.targets()
        verb = "would redrive"
    else:
        counts, verb = delivered, "redrove"
    spread = ", ".join(f"{n} to {t}" for t, n in sorted(counts.items()))
    total = sum(counts.values())
    lines.append(
        f"{prog}: {verb} {total} record(s) from {plan.dlt}" + (f": {spread}" if total else "")
    )
    left = [f"{len(ls)} {why}" for why, ls in plan.skipped.items()]
    if plan.left_out:
        left.append(f"{plan.left_out} not matching {plan.where}")
    if left:
        lines.append(f"{prog}: left alone: {', '.join(left)}")
    for letter in plan.skipped.get(SKIP_TRUNCATED, []):
        lines.append(
            f"{prog}: {letter.marker} holds {letter.value and len(letter.value)} of "
            f"{letter.truncated} bytes: redrive {letter.original} from its topic instead"
        )
    return lines
