"""A slow handler (2 ms per event) with 300,000 events queued: the process's memory stays
bounded while it works through the backlog.

The service's resident set size (VmRSS) is sampled once a second for SAMPLE_SECONDS while
it handles the backlog. It must stay under RSS_BOUND_MIB, and must not keep growing: the
highest value of the last third of the samples may exceed the highest of the middle third
by at most GROWTH_MIB (librdkafka's prefetch fills in the first seconds, then stays).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.fault.counting import (
    OutputWatcher,
    Pipeline,
    Stream,
    encode_ticks,
    ticks,
)
from tests.fault.instances import Fleet, rss_kib
from tests.fault.verdict import (
    record_result,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EVENTS = 300_000
SLEEP_MS = 2
SAMPLE_SECONDS = 30
RSS_BOUND_MIB = 160
GROWTH_MIB = 16


@pytest.mark.timeout(600)
def test_rss_stays_bounded_with_a_slow_handler_and_a_large_backlog(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    started = time.monotonic()
    p = pipeline(kafka_bootstrap, FAULT_SLEEP_MS=str(SLEEP_MS))
    stream = Stream(p.bootstrap, p.input, encode_ticks(ticks(EVENTS)))
    stream.start().wait(timeout=180)
    queued_s = time.monotonic() - started
    watcher = OutputWatcher(p.bootstrap, p.output)
    instance = fleet.start()
    try:
        instance.wait_assigned(p.input, timeout=60)
        samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, outputs so far)
        first = time.monotonic()
        for n in range(SAMPLE_SECONDS + 1):
            rss = rss_kib(instance.pid)
            assert rss is not None and instance.alive, f"{instance.name} ended:\n{instance.tail()}"
            at = round(time.monotonic() - first, 1)
            samples.append((at, round(rss / 1024, 1), watcher.count))
            # sampling pace, not synchronisation: one sample a second
            time.sleep(max(first + n + 1 - time.monotonic(), 0.0))
        exit_ = fleet.stop(instance, signal.SIGTERM, timeout=60)
    finally:
        watcher.close()
    rss = [s[1] for s in samples]
    third = len(rss) // 3
    growth = max(rss[2 * third :]) - max(rss[third : 2 * third])
    handled = samples[-1][2] - samples[0][2]
    figures = {
        "events queued": EVENTS,
        "queued in s": round(queued_s, 1),
        "handler sleep ms": SLEEP_MS,
        "rss MiB first/max/last": (rss[0], max(rss), rss[-1]),
        "growth last vs middle third MiB": round(growth, 1),
        "handled while sampled": handled,
        "events/s": round(handled / samples[-1][0], 1),
        "samples (s, MiB, outputs)": samples,
        "stop": str(exit_),
        "seconds": round(time.monotonic() - started, 1),
    }
    record_result("memory", figures)
    assert handled > 0, f"nothing handled while sampled: {samples}"
    assert max(rss) < RSS_BOUND_MIB, f"RSS {max(rss)} MiB >= {RSS_BOUND_MIB} MiB: {samples}"
    assert growth <= GROWTH_MIB, f"RSS still growing ({growth:.1f} MiB): {samples}"
