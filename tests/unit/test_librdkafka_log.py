"""librdkafka's log lines go through Python logging, each distinct one shown once (issue 11,
point 5). No broker: kit is pointed at a closed port."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from kit import Settings
from kit.transport.kafka import make_producer
from tests.unit.no_broker import closed_port, librdkafka_lines, run_kit


def test_kit_run_against_a_closed_port_prints_one_librdkafka_line(tmp_path: Path) -> None:
    port = closed_port()
    code, lines, took = run_kit(
        tmp_path,
        "run",
        "tests.fixtures.billing:service",
        KIT_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        KIT_CONNECT_TIMEOUT="2",
    )
    assert code == 2, lines
    assert took < 15, lines
    assert not [line for line in lines if line.startswith("%")], lines  # librdkafka's own
    refused = [line for line in lines if "Connection refused" in line]
    assert len(refused) == 2, lines  # librdkafka's line, once, and the error line
    assert "WARNING kit.librdkafka: " in refused[0], lines
    assert lines[-1].startswith(
        f"kit: configuration error: KIT_BOOTSTRAP_SERVERS: no broker answered at "
        f"127.0.0.1:{port} (from KIT_BOOTSTRAP_SERVERS) within 2s"
    ), lines
    assert len(lines) <= 4, lines


def test_librdkafka_logs_reach_python_logging_once_per_distinct_line(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}")
    producers = [make_producer(settings), make_producer(settings)]
    with caplog.at_level(logging.DEBUG, logger="kit.librdkafka"):
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # librdkafka reconnects every few 100 ms
            for producer in producers:
                producer.poll(0.05)
    ours = [r for r in caplog.records if r.name == "kit.librdkafka" and str(port) in r.message]
    shown = [r for r in ours if r.levelno >= logging.INFO]
    assert len(shown) == 1, [r.message for r in ours]  # one line for both clients
    assert shown[0].levelno == logging.WARNING
    assert "Connection refused" in shown[0].message
    assert len(ours) > 2  # the repeats are there, at DEBUG
    captured = capfd.readouterr()
    assert librdkafka_lines(captured.err + captured.out, port) == []
