"""One output record the broker refuses for good: every other output is kept, the refused
one's input goes to the dead-letter topic, and the service keeps running.

The output topic takes at most 512,000 bytes per record (`max.message.bytes`); one input
event (key k07, seq 60, mid-stream) makes a 700 kB output. The rest of the stream is
normal. Should the service exit, it is started again (up to RESTARTS times, as a
supervisor would), so that what the exits cost can be counted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.fault.counting import (
    Pipeline,
    Stream,
    encode_ticks,
    ticks,
    wait_settled,
)
from tests.fault.instances import Fleet
from tests.fault.verdict import (
    read_dead_letters,
    record_result,
    report_figures,
    verify,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EVENTS = 6_000  # 50 keys x 120
OVERSIZE = ("k07", 60)
OUTPUT_LIMIT = 512_000
RESTARTS = 3


@pytest.mark.timeout(600)
def test_an_output_the_broker_refuses_is_dead_lettered_and_nothing_else_is_lost(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    started = time.monotonic()
    p = pipeline(
        kafka_bootstrap,
        output_config={"max.message.bytes": str(OUTPUT_LIMIT)},
        FAULT_OVERSIZE=f"{OVERSIZE[0]}:{OVERSIZE[1]}",
        FAULT_OVERSIZE_BYTES="700000",
    )
    items = ticks(EVENTS)
    stream = Stream(p.bootstrap, p.input, encode_ticks(items)).start()
    stream.wait(timeout=60)
    refused_at = stream.offsets[items.index(OVERSIZE)]

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

    good = [pair for pair in items if pair != OVERSIZE]
    report = verify(
        p.bootstrap,
        scenario="refused output",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=good,
    )
    dead = read_dead_letters(p.bootstrap, p.dead_letters)
    refused = [d for d in dead if d.original == refused_at]
    others = [d for d in dead if d.original != refused_at]
    by_itself = [e for e in exits if e.signal is None]
    report.extra.update(
        {
            "refused input at (partition, offset)": refused_at,
            "dead letters": len(dead),
            "dead letters of the refused input": [d.headers.get("kit-dlt-reason") for d in refused],
            "dead letters of good inputs": len(others),
            "settled": settled,
            "exits": [str(e) for e in exits],
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    print(report.summary())
    record_result("refused-output", report_figures(report))
    for e in by_itself:
        print(f"--- {e.name} exited by itself ({e.code}):\n" + "".join(e.tail))
    problems = []
    if report.lost:
        problems.append(f"{report.lost} good records lost")
    if report.order_violations:
        problems.append(f"{report.order_violations} order violations")
    if not refused:
        problems.append(f"the refused input {refused_at} is not in {p.dead_letters}")
    elif not all(d.reason for d in refused):
        problems.append("the refused input's dead letter has no kit-dlt-reason")
    if others:
        problems.append(f"{len(others)} good inputs dead-lettered")
    if by_itself:
        problems.append(f"the service did not keep running: {[str(e) for e in by_itself]}")
    if not report.committed_at_end:
        problems.append(f"committed {report.committed} != end {report.end}")
    assert not problems, "\n".join(problems) + "\n" + report.summary()
