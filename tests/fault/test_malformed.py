"""1,000 malformed payloads among 10,000 valid events, a few of them 2 MB: every valid event
handled, every malformed one in the dead-letter topic (counted by original offset), and
the service up throughout.

The input topic takes records up to 4 MiB (`max.message.bytes=4194304`), so the 2 MB
ones are legitimate records of that topic; the dead-letter topic is kit's to make. A
payload counts as malformed when kit's own Codec refuses it (each one is checked).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from kit.errors import DecodeError
from tests.fault.counting import (
    Pipeline,
    Stream,
    codec,
    encode_ticks,
    ticks,
    wait_settled,
)
from tests.fault.instances import Fleet
from tests.fault.svc import Tick
from tests.fault.verdict import (
    read_dead_letters,
    record_result,
    report_figures,
    verify,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

VALID = 10_000
MALFORMED = 1_000
OVERSIZE = 5  # of the malformed ones, 2 MB each
OVERSIZE_BYTES = 2_000_000
INPUT_LIMIT = 4_194_304
RESTARTS = 3


def malformed_payloads(rng: random.Random) -> list[tuple[str, bytes | None]]:
    """MALFORMED (kind, value) pairs, every one refused by the Codec; OVERSIZE of them big."""
    valid = codec().encode(Tick(key="k00", seq=7, pad="abcdefgh"))
    makers: dict[str, Callable[[], bytes | None]] = {
        "garbage": lambda: rng.randbytes(rng.randint(1, 300)),
        "wrong magic": lambda: b"\x00\x01" + rng.randbytes(rng.randint(8, 100)),
        "unknown schema": lambda: b"\xc3\x01" + rng.randbytes(8 + rng.randint(0, 60)),
        "truncated": lambda: valid[: rng.randint(3, len(valid) - 1)],
        "trailing bytes": lambda: valid + rng.randbytes(rng.randint(1, 20)),
        "empty": lambda: b"",
        "null": lambda: None,
    }
    kinds = list(makers)
    out: list[tuple[str, bytes | None]] = [
        ("2 MB garbage", rng.randbytes(OVERSIZE_BYTES)) for _ in range(OVERSIZE)
    ]
    while len(out) < MALFORMED:
        kind = kinds[len(out) % len(kinds)]
        value = makers[kind]()
        try:
            codec().decode(value, Tick)
        except DecodeError:
            out.append((kind, value))
    rng.shuffle(out)
    return out


@pytest.mark.timeout(600)
def test_malformed_payloads_are_dead_lettered_and_every_valid_event_is_handled(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    started = time.monotonic()
    p = pipeline(kafka_bootstrap, input_config={"max.message.bytes": str(INPUT_LIMIT)})
    rng = random.Random(8)
    items = ticks(VALID)
    good = encode_ticks(items)
    bad = malformed_payloads(rng)
    slots = [True] * MALFORMED + [False] * VALID  # True: a malformed record goes here
    rng.shuffle(slots)
    records: list[tuple[bytes | None, bytes | None]] = []
    kind_at: dict[int, str] = {}
    bad_iter, good_iter = iter(bad), iter(good)
    for n, is_bad in enumerate(slots):
        if is_bad:
            kind, value = next(bad_iter)
            kind_at[n] = kind
            records.append((f"bad-{n:05d}".encode(), value))
        else:
            records.append(next(good_iter))
    stream = Stream(p.bootstrap, p.input, records, config={"message.max.bytes": 5_000_000})
    stream.start().wait(timeout=120)
    bad_at = {stream.offsets[n]: kind for n, kind in kind_at.items()}

    def running() -> bool:
        return any(i.alive for i in fleet.instances)

    settled = False
    fleet.start()
    for attempt in range(RESTARTS + 1):
        settled = wait_settled(p.bootstrap, p.group, p.input, 120, give_up=lambda: not running())
        if settled or running() or attempt == RESTARTS:
            break
        fleet.start()
    up_at_end = [i for i in fleet.instances if i.alive]
    for instance in up_at_end:
        instance.send(signal.SIGTERM)
    exits = [i.wait_exit(60) for i in fleet.instances]

    report = verify(
        p.bootstrap,
        scenario="malformed input",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=items,
    )
    dead = read_dead_letters(p.bootstrap, p.dead_letters)
    originals = Counter(d.original for d in dead)
    missing = [at for at in bad_at if at not in originals]
    extra = [at for at in originals if at not in bad_at]
    by_itself = [e for e in exits if e.signal is None]
    report.extra.update(
        {
            "malformed sent": len(bad_at),
            "malformed by kind": dict(Counter(bad_at.values())),
            "dead letters": len(dead),
            "malformed dead-lettered": len(bad_at) - len(missing),
            "malformed missing from the DLT, by kind": dict(Counter(bad_at[a] for a in missing)),
            "valid records dead-lettered": len(extra),
            "dead letters repeated": sum(n - 1 for n in originals.values()),
            "largest dead letter (bytes)": max((d.size for d in dead), default=0),
            "settled": settled,
            "exits": [str(e) for e in exits],
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    print(report.summary())
    record_result("malformed", report_figures(report))
    for e in by_itself:
        print(f"--- {e.name} exited by itself ({e.code}):\n" + "".join(e.tail))
    problems = []
    if report.lost:
        problems.append(f"{report.lost} valid events not handled")
    if missing:
        problems.append(f"{len(missing)} malformed records not in {p.dead_letters}")
    if extra:
        problems.append(f"{len(extra)} valid records in {p.dead_letters}")
    if by_itself:
        problems.append(f"the service did not stay up: {[str(e) for e in by_itself]}")
    if not up_at_end:
        problems.append("no instance up at the end")
    if not report.committed_at_end:
        problems.append(f"committed {report.committed} != end {report.end}")
    assert not problems, "\n".join(problems) + "\n" + report.summary()
