"""Dead-letter tooling (`kit dlt`): count, show and redrive the records of dead-letter topics.

- `dead_letter_counts()`: every topic ending in KIT_DEAD_LETTER_SUFFIX, by kit-dlt-reason.
- `show()`: the newest dead letters of a topic, with their values decoded where possible.
- `redrive()` (kit.dlt.redriving): republish them, once each, marked kit-redriven-from.

kit.dlt.letters and kit.dlt.report hold what needs no broker (the headers read back,
`--where`, the choice of what to redrive, the output); kit.dlt.reading reads topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit.config import Settings
from kit.dlt.letters import DeadLetter, Plan, Where, parse_where
from kit.dlt.reading import Session
from kit.dlt.redriving import RedriveResult, redrive
from kit.dlt.report import TopicCounts, decode_value
from kit.schema import SchemaRepository

__all__ = [
    "DeadLetter",
    "Plan",
    "RedriveResult",
    "Shown",
    "TopicCounts",
    "Where",
    "dead_letter_counts",
    "parse_where",
    "redrive",
    "show",
]


def dead_letter_counts(settings: Settings, *, timeout: float = 60.0) -> list[TopicCounts]:
    """Each dead-letter topic of the cluster, its records counted by kit-dlt-reason."""
    with Session(settings, timeout) as session:
        return [session.counts(topic) for topic in session.dead_letter_topics()]


@dataclass(frozen=True)
class Shown:
    """A dead letter with its value decoded (JSON data), or why it could not be."""

    letter: DeadLetter
    value: Any  # Any: the decoded value as JSON data
    error: str | None


def show(
    settings: Settings,
    topic: str,
    *,
    limit: int = 20,
    where: Where | None = None,
    timeout: float = 60.0,
    repository: SchemaRepository | None = None,
) -> tuple[list[Shown], int]:
    """The `limit` newest dead letters of `topic` that `where` matches, oldest first, each
    decoded with its writer schema (from `repository`, default the project's, else the
    schema topic by fingerprint); and how many dead letters match in all."""
    with Session(settings, timeout) as session:
        letters, matched = session.newest(topic, limit, where or Where())
        codec = session.codec(repository)
        return [Shown(x, *decode_value(codec, x)) for x in letters], matched
