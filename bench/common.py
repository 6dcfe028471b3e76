"""Shared by the driver and the contenders: arguments, the Avro schema, timing, results.

Nothing here imports kit, so that the peers' processes load only what they need.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "PARSED",
    "SCHEMA_FILE",
    "Meter",
    "contender_args",
    "emit",
    "peak_rss_mb",
    "transform",
]

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "bench" / "Reading.avsc"
_DEFINITION = json.loads(SCHEMA_FILE.read_text())
PARSED: dict[str, Any] = parse_schema(_DEFINITION)
"""The fastavro-parsed `bench.Reading` schema, for the contenders that are not kit.

Parsed with fastavro's defaults: the `__fastavro_parsed` marker they leave in the dict is
what stops schemaless_reader/writer from parsing the schema again on every call.
"""
HEADER_SIZE = 10
_CANONICAL = to_parsing_canonical_form(parse_schema(_DEFINITION, _write_hint=False))
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(_CANONICAL, "CRC-64-AVRO"))
"""Avro single-object header of `bench.Reading`: C3 01 + CRC-64-AVRO fingerprint (8 bytes)."""


def transform(value: bytes) -> bytes:
    """The peers' handler body: decode a Reading, flip `ok`, encode it again."""
    if value[:HEADER_SIZE] != HEADER:
        raise ValueError(f"unexpected header {value[:HEADER_SIZE].hex()}")
    body = BytesIO(value)
    body.seek(HEADER_SIZE)
    record = schemaless_reader(body, PARSED, None)
    record["ok"] = not record["ok"]
    out = BytesIO()
    out.write(HEADER)
    schemaless_writer(out, PARSED, record)
    return out.getvalue()


def contender_args(description: str) -> argparse.Namespace:
    """The command line every contender takes (the driver fills it in)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--input", required=True, help="pre-filled input topic")
    parser.add_argument("--output", required=True, help="output topic (exists)")
    parser.add_argument("--group", required=True, help="fresh consumer group")
    parser.add_argument("--events", type=int, required=True, help="records in the input")
    parser.add_argument("--batch", type=int, default=500, help="records fetched per batch")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (s)")
    parser.add_argument("--profile", default="", help="write a profile here (kit only)")
    return parser.parse_args()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    VmHWM from /proc (per address space) rather than ru_maxrss: Linux carries ru_maxrss
    over exec, so a child would report its parent's peak if that was higher.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (all its threads), from /proc;
    None if it is gone or there is no /proc (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Times one contender from its first consumed record to its last confirmed output."""

    events: int
    first: float = 0.0
    last: float = 0.0
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        """Call on every consumed record (or batch); only the first call counts."""
        if not self.first:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()

    def finish(self) -> None:
        """Call once the last output record is confirmed by the broker."""
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()

    def result(self, contender: str, handled: int, delivered: int) -> dict[str, Any]:
        """The figures the driver collects."""
        seconds = (self.last or time.perf_counter()) - self.first if self.first else 0.0
        cpu = (self.cpu_last or time.process_time()) - self.cpu_first if self.first else 0.0
        complete = handled >= self.events and delivered >= self.events and self.last > 0
        return {
            "contender": contender,
            "events": self.events,
            "handled": handled,
            "delivered": delivered,
            "complete": complete,
            "seconds": round(seconds, 3),
            "events_per_s": round(self.events / seconds) if complete and seconds else 0,
            "cpu_s": round(cpu, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            **self.extra,
        }


def emit(result: dict[str, Any]) -> None:
    """Print the result line the driver parses."""
    print("RESULT " + json.dumps(result), flush=True)
