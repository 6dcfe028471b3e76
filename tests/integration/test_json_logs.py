"""`KIT_LOG_FORMAT=json kit run`: every log line is a JSON object, and a handler's line says
which service, instance and record it comes from (issue 14, point 4)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from kit import Client, Settings
from kit.protocol import CORRELATION_ID
from tests.fixtures.jsonlogs import TOPIC
from tests.integration.helpers import order

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


class Lines:
    """The lines of one of a process's pipes, read by a thread as they come."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait(self, found: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """The first line `found` accepts, polled until `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.snapshot():
                if found(line):
                    return line
            time.sleep(0.05)  # polling for output, not waiting for an event to happen
        raise AssertionError(f"no line {what} in {timeout}s: {self.snapshot()}")

    def join(self, timeout: float = 10) -> None:
        """Wait for the pipe to close (the process has exited)."""
        self._thread.join(timeout)


def test_kit_run_with_json_logs_writes_one_object_per_line_with_the_record(
    kafka_bootstrap: str, kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    marker = unique_name("json")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KIT_GROUP_ID": unique_name("g"),
        "KIT_SHUTDOWN_TIMEOUT": "15",
        "KIT_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit.cli", "run", "tests.fixtures.jsonlogs:service"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        out.wait(lambda line: "jsonlogger ready: instance" in line, "saying ready")
        headers = {CORRELATION_ID: f"corr-{marker}", "traceparent": f"00-{TRACE}-{SPAN}-01"}

        async def publish() -> None:
            async with Client(kit_settings) as client:
                event = order(1).model_copy(update={"order_id": marker})
                await client.publish(event, key=marker, topic=TOPIC, headers=headers)

        asyncio.run(publish())
        line = err.wait(lambda line: marker in line and "saw order" in line, "from the handler")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out.join()
        err.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = [parse(text) for text in err.snapshot()]  # each line: one JSON object
    assert logged, "no log lines"
    handled = parse(line)
    assert handled["logger"] == "tests.fixtures.jsonlogs"
    assert handled["level"] == "INFO"
    assert handled["message"] == f"saw order {marker}"
    assert handled["order_id"] == marker  # an extra field
    assert handled["service"] == "jsonlogger"
    assert handled["instance"].startswith("jsonlogger-")
    assert handled["topic"] == TOPIC
    assert isinstance(handled["partition"], int) and isinstance(handled["offset"], int)
    assert handled["correlation_id"] == f"corr-{marker}"
    assert (handled["trace_id"], handled["span_id"]) == (TRACE, SPAN)
    # the runtime's own lines, outside any handler, carry the service but no record
    runtime = [p for p in logged if p["logger"].startswith("kit.") and "service" in p]
    assert runtime, logged


def parse(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict), text
    for key in ("time", "level", "logger", "message"):
        assert key in value, text
    return value
