"""Redrive: republish dead letters to their original topic (or another), exactly once per
dead letter, however often it runs and wherever it was stopped.

The only record of a redrive is the redriven record itself: it carries
kit-redriven-from = DLT/PARTITION/OFFSET. Before sending, a redrive reads each target
topic from the oldest dead letter it would send there (less `MARGIN_MS`, for clocks that
disagree) and leaves out every letter whose marker it finds. So there is no separate
commit that could get ahead of a delivery, or fall behind it:

- killed half-way (or a delivery failed): what reached the broker carries its marker and
  is found by the next run; what did not is sent by the next run. Nothing is lost, and a
  plain second run sends nothing again.
- a record that failed more than once (handled again after a crash) has several dead
  letters with the same kit-dlt-original-* headers: it is redriven once.

Not covered: two redrives of one DLT running at the same time (each may send what the
other is sending), and a redriven record the target's retention has already deleted (it
is no longer found, so its letter is sent again).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kit.config import Settings
from kit.dead_letters import RECORD_OVERHEAD
from kit.dlt.letters import DeadLetter, Plan, Redrive, Where, choose
from kit.dlt.reading import Session
from kit.errors import DeliveryError
from kit.transport.kafka import make_producer

__all__ = ["MARGIN_MS", "RedriveResult", "deliver", "plan_redrive", "redrive"]

log = logging.getLogger("kit.dlt")

MARGIN_MS = 3_600_000
"""How much older than a dead letter a target is read from when looking for its marker:
the redriven record is stamped by the redriving host's clock, the dead letter by the
service's, and they may disagree."""


@dataclass
class RedriveResult:
    """What a redrive planned, and what the broker confirmed (None for a dry run)."""

    plan: Plan
    delivered: Counter[str] | None = None
    """Records confirmed, per target topic."""
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Records the broker refused, or that failed to send, with the error."""
    unconfirmed: int = 0
    """Records sent but not confirmed in time (the next run finds those that arrived)."""
    unsent: int = 0
    """Records not sent because an earlier one failed."""

    @property
    def ok(self) -> bool:
        """True if every record of the plan was confirmed (or it was a dry run)."""
        return not self.failed and not self.unconfirmed and not self.unsent


def plan_redrive(session: Session, dlt: str, where: Where, to: str | None) -> Plan:
    """Read `dlt` and the records already redriven from it; choose what to send where."""
    session.require(dlt)
    if to is not None:
        session.require(to)
    letters = session.letters(dlt)
    since: dict[str, int] = {}  # target: the oldest dead letter that may go there
    for letter in letters:
        target = to or letter.original_topic
        if target in session.partitions and where.matches(letter):
            since[target] = min(since.get(target, letter.timestamp_ms), letter.timestamp_ms)
    redriven = {
        (target, marker)
        for target, oldest in since.items()
        for marker in session.markers(target, dlt, oldest - MARGIN_MS)
    }
    return choose(dlt, letters, where, to, session.partitions, redriven)


class _Outcome:
    """Delivery reports of one redrive: the error of each record that failed."""

    def __init__(self) -> None:
        self.delivered: Counter[str] = Counter()
        self.failed: list[tuple[DeadLetter, str]] = []

    def callback(self, redrive: Redrive) -> Callable[[KafkaError | None, Message], None]:
        """The on_delivery callback of one record."""

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.delivered[redrive.target] += 1
            else:
                self.failed.append((redrive.letter, err.str()))

        return report


def _send(producer: Producer, r: Redrive, outcome: _Outcome, deadline: float) -> None:
    """Queue one record; wait (up to `deadline`) while the producer's queue is full."""
    letter = r.letter
    headers: list[tuple[str, str | bytes | None]] = [*letter.redrive_headers()]
    while True:
        try:
            producer.produce(
                r.target,
                letter.value,
                letter.key,
                partition=-1 if r.partition is None else r.partition,  # -1: by key
                on_delivery=outcome.callback(r),
                headers=headers,
            )
            return
        except BufferError:
            if time.monotonic() >= deadline:
                raise DeliveryError(
                    f"cannot queue a record for {r.target}: the producer's queue stayed full"
                ) from None
            producer.poll(0.1)
        except KafkaException as exc:  # refused before sending (too large, unknown topic)
            error = exc.args[0] if exc.args else None
            outcome.failed.append(
                (letter, error.str() if isinstance(error, KafkaError) else str(exc))
            )
            return


def deliver(settings: Settings, plan: Plan) -> RedriveResult:
    """Send the plan's records with an idempotent producer (acks=all), in DLT order, and
    wait for the broker to confirm each, up to KIT_DELIVERY_TIMEOUT after the last send.
    After the first failure nothing more is sent."""
    largest = max(
        (
            len(r.letter.key or b"")
            + len(r.letter.value or b"")
            + sum(len(k) + len(v or b"") for k, v in r.letter.headers)
            for r in plan.chosen
        ),
        default=0,
    )
    producer = make_producer(settings, message_max_bytes=largest + RECORD_OVERHEAD)
    outcome = _Outcome()
    wait = settings.delivery_timeout + 5.0
    sent = 0
    for r in plan.chosen:
        producer.poll(0)
        if outcome.failed:
            break
        _send(producer, r, outcome, time.monotonic() + wait)
        sent += 1
    left = producer.flush(wait)
    return RedriveResult(plan, outcome.delivered, outcome.failed, left, len(plan.chosen) - sent)


def redrive(
    settings: Settings,
    dlt: str,
    *,
    where: Where | None = None,
    to: str | None = None,
    dry_run: bool = False,
    timeout: float = 60.0,
) -> RedriveResult:
    """Republish the dead letters of `dlt` that `where` matches (default: all) to `to`, or
    each to its original topic, keeping key, value and original headers, adding
    kit-redriven-from. `dry_run`: plan only. `timeout`: deadline of each topic read."""
    with Session(settings, timeout) as session:
        plan = plan_redrive(session, dlt, where or Where(), to)
    if dry_run:
        return RedriveResult(plan)
    if not plan.chosen:
        return RedriveResult(plan, Counter())
    result = deliver(settings, plan)
    log.info("redrove %d record(s) from %s", sum((result.delivered or {}).values()), dlt)
    return result
