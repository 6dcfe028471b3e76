"""Instances killed, stopped and churned mid-stream: nothing lost, order kept per key.

Each kill or stop comes after the instance logged its assignment and handled some records
(a kill inside the 20 s session timeout of the previous member would exercise nothing).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fault.counting import (
    OutputWatcher,
    Pipeline,
    Stream,
    encode_ticks,
    ticks,
    wait_settled,
)
from tests.fault.instances import Exit, Fleet
from tests.fault.verdict import (
    Report,
    record_result,
    report_figures,
    verify,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EVENTS = 100_000
SIGNALS = 10
CHURN_EVENTS = 60_000
CHURN_RATE = 1_000  # events/s: the stream lasts about a minute
CHURN_EVERY = 2.5  # seconds between churn steps


def _signal_loop(
    p: Pipeline, fleet: Fleet, sig: signal.Signals, seed: int, rate: float
) -> tuple[Report, list[dict[str, Any]], Exit, float]:
    """Start an instance, wait until it is assigned and has handled a few hundred to a few
    thousand records, send `sig`; SIGNALS times. The stream (`rate` records/s) is gated so
    that a share of it is still to come after every signal. Then one last instance handles
    the rest and stops gracefully. Returns the report, the cycles, the last exit, seconds."""
    started = time.monotonic()
    rng = random.Random(seed)
    items = ticks(EVENTS)
    signalled = [0]
    stream = Stream(
        p.bootstrap,
        p.input,
        encode_ticks(items),
        rate=rate,
        gate=lambda: EVENTS * (signalled[0] + 1) // (SIGNALS + 1),
    )
    watcher = OutputWatcher(p.bootstrap, p.output)
    cycles: list[dict[str, Any]] = []
    try:
        stream.start()
        for _ in range(SIGNALS):
            instance = fleet.start()
            assigned_after = instance.wait_assigned(p.input, timeout=60)
            at_assign = watcher.count
            worked = watcher.wait_for(
                at_assign + rng.randint(200, 3_000), 30, lambda i=instance: i.alive
            )
            assert instance.alive, f"{instance.name} exited before the {sig.name}:\n" + (
                instance.tail()
            )
            sent, outputs = stream.sent, watcher.count
            exit_ = fleet.stop(instance, sig, timeout=60)
            signalled[0] += 1
            cycles.append(
                {
                    "instance": instance.name,
                    "assigned_after_s": round(assigned_after, 2),
                    "handled_before_signal": outputs - at_assign,
                    "mid_work": worked,
                    "sent_so_far": sent,
                    "exit_code": exit_.code,
                    "exit_s": round(exit_.seconds, 2),
                }
            )
        last = fleet.start()
        last.wait_assigned(p.input, timeout=60)
        stream.wait(timeout=120)
        wait_settled(p.bootstrap, p.group, p.input, 120, give_up=lambda: not last.alive)
        assert last.alive, f"{last.name} exited by itself:\n{last.tail()}"
        final = fleet.stop(last, signal.SIGTERM, timeout=60)
    finally:
        watcher.close()
        stream.close()
    report = verify(
        p.bootstrap,
        scenario=f"{sig.name} x{SIGNALS}",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=items,
    )
    return report, cycles, final, time.monotonic() - started


@pytest.mark.timeout(600)
def test_sigkill_ten_times_mid_stream_loses_nothing_and_keeps_order(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    p = pipeline(kafka_bootstrap)
    report, cycles, final, seconds = _signal_loop(p, fleet, signal.SIGKILL, seed=9, rate=5_000)
    print(report.summary())
    record_result(
        "sigkill", {**report_figures(report), "cycles": cycles, "seconds": round(seconds, 1)}
    )
    assert all(c["exit_code"] == -signal.SIGKILL for c in cycles), cycles
    assert report.lost == 0, report.summary()
    assert report.order_violations == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    assert final.code == 0, f"{final}:\n{''.join(final.tail)}"
    assert report.committed_at_end, report.summary()


@pytest.mark.timeout(600)
def test_sigterm_ten_times_mid_stream_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    p = pipeline(kafka_bootstrap)
    report, cycles, final, seconds = _signal_loop(p, fleet, signal.SIGTERM, seed=15, rate=20_000)
    print(report.summary())
    record_result(
        "sigterm", {**report_figures(report), "cycles": cycles, "seconds": round(seconds, 1)}
    )
    bad = [c for c in cycles if c["exit_code"] != 0]
    assert not bad, f"SIGTERM exits not 0: {bad}\n{_tails(fleet, bad)}"
    assert final.code == 0, f"{final}:\n{''.join(final.tail)}"
    assert report.lost == 0, report.summary()
    assert report.duplicated == 0, report.summary()
    assert report.order_violations == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    assert report.committed_at_end, report.summary()


@pytest.mark.timeout(600)
def test_churn_of_three_instances_loses_nothing_and_every_sigterm_exits_0(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    """Up to 3 instances; every CHURN_EVERY s one is added, or one that holds partitions is
    removed (every third removal a SIGKILL, the others SIGTERM), while a stream runs."""
    started = time.monotonic()
    p = pipeline(kafka_bootstrap, partitions=6, KIT_SHUTDOWN_TIMEOUT="15")
    items = ticks(CHURN_EVENTS)
    stream = Stream(p.bootstrap, p.input, encode_ticks(items), rate=CHURN_RATE)
    rng = random.Random(6)
    steps: list[str] = []
    removals = 0

    def active() -> list[Any]:
        return [i for i in fleet.instances if i.alive and i.signalled is None]

    try:
        for _ in range(3):
            fleet.start()
        stream.start()
        while not stream.all_sent.wait(CHURN_EVERY):
            now = active()
            if len(now) < 3:
                steps.append(f"start {fleet.start().name}")
                continue
            holding = [i for i in now if i.assigned(p.input)]
            if not holding:
                steps.append("wait (no running instance holds partitions)")
                continue
            victim = rng.choice(holding)
            sig = signal.SIGKILL if removals % 3 == 2 else signal.SIGTERM
            victim.send(sig)
            removals += 1
            steps.append(f"{sig.name} {victim.name}")
        stream.wait(timeout=60)
        if not active():
            steps.append(f"start {fleet.start().name}")
        settled = wait_settled(p.bootstrap, p.group, p.input, 180, give_up=lambda: not active())
        still_up = active()
        for instance in still_up:
            instance.send(signal.SIGTERM)
        exits = [instance.wait_exit(60) for instance in fleet.instances]
    finally:
        stream.close()
    report = verify(
        p.bootstrap,
        scenario="churn",
        input_topic=p.input,
        output_topic=p.output,
        group=p.group,
        expected=items,
    )
    terms = [e for e in exits if e.signal == "SIGTERM"]
    failed_terms = [e for e in terms if e.code != 0]
    by_itself = [e for e in exits if e.signal is None]
    figures = {
        **report_figures(report),
        "steps": steps,
        "instances": len(fleet.instances),
        "sigterm_exits": [f"{e.name}:{e.code}@{e.seconds:.2f}s" for e in terms],
        "sigkills": sum(e.signal == "SIGKILL" for e in exits),
        "exited_by_itself": [str(e) for e in by_itself],
        "settled": settled,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(report.summary())
    record_result("churn", figures)
    problems = []
    if report.lost:
        problems.append(f"{report.lost} lost")
    if report.order_violations:
        problems.append(f"{report.order_violations} order violations")
    if failed_terms:
        problems.append(
            "SIGTERM exits not 0: "
            + "; ".join(f"{e}\n    " + "    ".join(e.tail) for e in failed_terms)
        )
    if by_itself:
        problems.append(
            "exited without a signal: "
            + "; ".join(f"{e}\n    " + "    ".join(e.tail) for e in by_itself)
        )
    if not report.committed_at_end:
        problems.append(f"committed {report.committed} != end {report.end}")
    assert not problems, "\n".join(problems) + "\n" + report.summary()


def _tails(fleet: Fleet, cycles: list[dict[str, Any]]) -> str:
    names = {c["instance"] for c in cycles}
    return "\n".join(f"--- {i.name}\n{i.tail(15)}" for i in fleet.instances if i.name in names)
