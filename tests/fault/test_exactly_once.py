"""Exactly-once under SIGKILL (issue 9): 0 lost and 0 duplicates, read with read_committed."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.fault.counting import Pipeline
from tests.fault.instances import Fleet
from tests.fault.test_restarts import _signal_loop
from tests.fault.verdict import record_result, report_figures

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.mark.timeout(600)
def test_sigkill_ten_times_with_exactly_once_loses_and_duplicates_nothing(
    kafka_bootstrap: str, pipeline: Callable[..., Pipeline], fleet: Fleet
) -> None:
    """The SIGKILL loop of test_restarts with KIT_EXACTLY_ONCE: a killed instance's open
    transaction is aborted by its successor (same transactional id slot), and the output is
    read as a read_committed consumer reads it."""
    p = pipeline(kafka_bootstrap, KIT_EXACTLY_ONCE="true")
    report, cycles, final, seconds = _signal_loop(p, fleet, signal.SIGKILL, seed=21, rate=5_000)
    print(report.summary())
    record_result(
        "sigkill-exactly-once",
        {**report_figures(report), "cycles": cycles, "seconds": round(seconds, 1)},
    )
    assert all(c["exit_code"] == -signal.SIGKILL for c in cycles), cycles
    assert all(c["mid_work"] for c in cycles), cycles
    assert report.lost == 0, report.summary()
    assert report.duplicated == 0, report.summary()
    assert report.order_violations == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    assert final.code == 0, f"{final}:\n{''.join(final.tail)}"
    assert report.committed_at_end, report.summary()
