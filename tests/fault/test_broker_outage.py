"""The broker stopped mid-stream for 10 s and for 60 s (longer than KIT_DELIVERY_TIMEOUT=30 s),
then started again on the same data: nothing lost.

Each case runs its own broker (`kit broker start|stop` on a private KIT_BROKER_DIR and
port), so the session broker other tests share is never stopped. The stop is Kafka's
controlled shutdown (it takes about a second), the start reuses the data (about 3 s).

The service is slower than the stream (1 ms per event), so when the broker goes away it
still has fetched records to handle and their outputs to deliver. It may ride the outage
out, or exit by itself; then it is started again once the broker is back, as a supervisor
would, and its exit code is reported.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault.broker import DedicatedBroker
from tests.fault.counting import (
    OutputWatcher,
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

EVENTS = 12_000
RATE = 2_000  # events/s; at 1 ms per event the service handles about 850-1,500/s
DELIVERY_TIMEOUT = 30  # KIT_DELIVERY_TIMEOUT, the default, stated for the record
RESTARTS = 3


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DedicatedBroker]:
    broker = DedicatedBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("outage", [10, 60])
def test_broker_stopped_mid_stream_then_restarted_loses_nothing(
    outage: int,
    broker: DedicatedBroker,
    pipeline: Callable[..., Pipeline],
    fleet: Fleet,
) -> None:
    started = time.monotonic()
    p = pipeline(
        broker.bootstrap,
        FAULT_SLEEP_MS="1",
        KIT_DELIVERY_TIMEOUT=str(DELIVERY_TIMEOUT),
    )
    items = ticks(EVENTS)
    stream = Stream(p.bootstrap, p.input, encode_ticks(items), rate=RATE)
    watcher = OutputWatcher(p.bootstrap, p.output)
    timeline: list[str] = []

    def note(text: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f}s {text}")

    def running() -> list[object]:
        return [i for i in fleet.instances if i.alive]

    try:
        first = fleet.start()
        first.wait_assigned(p.input, timeout=60)
        stream.start()
        note(f"{first.name} assigned; stream started")
        assert watcher.wait_for(EVENTS // 5, 60, lambda: first.alive), (
            f"no progress before the outage:\n{first.tail()}"
        )
        note(f"stopping the broker: sent {stream.sent}, outputs {watcher.count}")
        stop_s = broker.stop()
        stopped = time.monotonic()
        note(f"broker stopped in {stop_s:.1f}s; holding it down {outage}s")
        # The outage is a timed hold (not a synchronisation): watch the service meanwhile.
        if first.ended(timeout=outage):
            note(f"{first.name} exited during the outage")
            time.sleep(max(stopped + outage - time.monotonic(), 0.0))
        start_s = broker.start()
        note(f"broker started in {start_s:.1f}s; {first.name} alive: {first.alive}")
        stream.wait(timeout=300)
        note(f"stream confirmed: {stream.confirmed}")
        settled = False
        for attempt in range(RESTARTS + 1):
            settled = wait_settled(
                p.bootstrap, p.group, p.input, 300, give_up=lambda: not running()
            )
            if settled or running() or attempt == RESTARTS:
                break
            note(f"no instance running ({[str(e) for e in fleet.exits]}); starting one")
            fleet.start().wait_assigned(p.input, timeout=60)
        note(f"settled: {settled}")
        for instance in running():
            instance.send(signal.SIGTERM)  # type: ignore[attr-defined]
        exits = [i.wait_exit(60) for i in fleet.instances]
    finally:
        watcher.close()
        stream.close()
    report = verify(
        p.bootstrap,
        scenario=f"broker down {outage}s",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=items,
    )
    dead = read_dead_letters(p.bootstrap, p.dead_letters)
    by_itself = [e for e in exits if e.signal is None]
    report.extra.update(
        {
            "timeline": timeline,
            "exits": [str(e) for e in exits],
            "dead_letters": len(dead),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    print(report.summary())
    record_result(f"broker-outage-{outage}s", report_figures(report))
    for e in by_itself:
        print(f"--- {e.name} exited by itself ({e.code}):\n" + "".join(e.tail))
    problems = []
    if report.lost:
        problems.append(f"{report.lost} lost")
    if dead:
        problems.append(f"{len(dead)} good records dead-lettered")
    if not settled:
        problems.append(f"not settled after {RESTARTS} restarts")
    if not report.committed_at_end:
        problems.append(f"committed {report.committed} != end {report.end}")
    if any(e.code < 0 for e in by_itself):
        problems.append("an instance died of a signal it was not sent")
    terms = [e for e in exits if e.signal == "SIGTERM" and e.code != 0]
    if terms:
        problems.append(f"SIGTERM exits not 0: {[str(e) for e in terms]}")
    assert not problems, "\n".join(problems) + "\n" + report.summary()
