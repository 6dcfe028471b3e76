"""The verdict of a fault scenario: what came out against what went in, and dead letters.

- `verify` reads the whole output topic to its end offsets and counts lost, duplicated and
  out-of-order (per key, first occurrences) records, and the group's committed offsets on
  the input topic against its end offsets, into a `Report`.
- `read_dead_letters` reads a dead-letter topic with its kit-dlt-* coordinates.
- `record_result` prints a scenario's figures (and appends them to FAULT_RESULTS as JSON).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fault.counting import codec, committed_offsets, end_offsets, read_all
from tests.fault.svc import Tock

__all__ = [
    "DeadLetter",
    "Report",
    "read_dead_letters",
    "record_result",
    "report_figures",
    "verify",
]


@dataclass
class Report:
    """What came out of the service against what went in, and how far the group committed."""

    scenario: str
    expected: int
    outputs: int
    lost: int
    duplicated: int
    order_violations: int
    unexpected: int
    committed: dict[int, int]
    end: dict[int, int]
    lost_sample: list[tuple[str, int]] = field(default_factory=list)
    violation_sample: list[str] = field(default_factory=list)
    by_instance: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def committed_at_end(self) -> bool:
        """True when the group committed the end offset of every input partition."""
        return bool(self.end) and self.committed == self.end

    @property
    def behind(self) -> int:
        """Records between the committed offsets and the end offsets (negative: past it)."""
        return sum(end - max(self.committed.get(p, 0), 0) for p, end in self.end.items())

    def summary(self) -> str:
        lines = [
            f"[{self.scenario}] expected {self.expected}, outputs {self.outputs}: "
            f"lost {self.lost}, duplicated {self.duplicated}, "
            f"order violations {self.order_violations}, unexpected {self.unexpected}",
            f"  committed {self.committed} vs end {self.end}: "
            f"{'at end' if self.committed_at_end else f'{self.behind} behind'}",
        ]
        if self.lost_sample:
            lines.append(f"  lost e.g. {self.lost_sample}")
        if self.violation_sample:
            lines.append(f"  out of order e.g. {self.violation_sample}")
        if self.by_instance:
            lines.append(f"  outputs by instance: {self.by_instance}")
        lines += [f"  {k}: {v}" for k, v in self.extra.items()]
        return "\n".join(lines)


def verify(
    bootstrap: str,
    *,
    scenario: str,
    input_topic: str,
    output_topic: str,
    group: str,
    expected: Iterable[tuple[str, int]],
    timeout: float = 120.0,
) -> Report:
    """Read the whole output topic and count against `expected` (key, seq) pairs.

    - lost: expected pairs never seen in the output;
    - duplicated: output records beyond the first of each pair;
    - order violations: per key, a first occurrence of a seq below an earlier first
      occurrence (output order is partition order, and a key has one partition);
    - unexpected: output pairs that were not expected.
    """
    want = set(expected)
    decode = codec().decode
    seen: Counter[tuple[str, int]] = Counter()
    by_instance: Counter[str] = Counter()
    top: dict[str, int] = {}
    violations: list[str] = []
    messages = read_all(bootstrap, output_topic, timeout)
    for msg in messages:
        tock = decode(msg.value(), Tock)
        pair = (tock.key, tock.seq)
        by_instance[tock.instance] += 1
        if seen[pair] == 0 and pair in want:
            highest = top.get(tock.key, -1)
            if tock.seq < highest:
                violations.append(f"{tock.key}: seq {tock.seq} first seen after {highest}")
            top[tock.key] = max(highest, tock.seq)
        seen[pair] += 1
    lost = sorted(want - seen.keys())
    return Report(
        scenario=scenario,
        expected=len(want),
        outputs=len(messages),
        lost=len(lost),
        duplicated=sum(n - 1 for pair, n in seen.items() if pair in want),
        order_violations=len(violations),
        unexpected=sum(n for pair, n in seen.items() if pair not in want),
        committed=committed_offsets(bootstrap, group, input_topic),
        end=end_offsets(bootstrap, input_topic),
        lost_sample=lost[:10],
        violation_sample=violations[:10],
        by_instance=dict(sorted(by_instance.items())),
    )


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record, with the original's coordinates from its kit-dlt-* headers."""

    partition: int
    offset: int
    size: int
    headers: dict[str, str]

    @property
    def original(self) -> tuple[int, int]:
        """(partition, offset) of the original record."""
        return (
            int(self.headers.get("kit-dlt-original-partition", "-1")),
            int(self.headers.get("kit-dlt-original-offset", "-1")),
        )

    @property
    def reason(self) -> str | None:
        return self.headers.get("kit-dlt-reason")


def read_dead_letters(bootstrap: str, topic: str, timeout: float = 60.0) -> list[DeadLetter]:
    """Every record of a dead-letter topic (none if the topic does not exist)."""
    out = []
    for msg in read_all(bootstrap, topic, timeout):
        headers = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or []}
        out.append(DeadLetter(msg.partition(), msg.offset(), len(msg.value() or b""), headers))
    return out


def record_result(name: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures; with FAULT_RESULTS=path, also append them there as JSON."""
    print(f"\nFAULT {name}: {json.dumps(figures, default=str)}", flush=True)
    path = os.environ.get("FAULT_RESULTS")
    if path:
        with Path(path).open("a") as f:
            f.write(json.dumps({"scenario": name, "at": time.time(), **figures}, default=str))
            f.write("\n")


def report_figures(report: Report) -> dict[str, Any]:
    """A Report as plain data for record_result."""
    data = asdict(report)
    data["committed_at_end"] = report.committed_at_end
    return data
