"""Instructions per event of kit's record path, counted by valgrind: deterministic.

Throughput on a shared 2-core machine moves by 10-20% from run to run; an instruction
count does not. This runs `Dispatcher.handle_batch` over N real `confluent_kafka.Message`
records (the `bench.kit_breakdown` set-up: `bench.Reading`, a handler that publishes a
copy, a sink that confirms at once) under `valgrind --tool=callgrind`, twice over and
not at all, and reports (instructions of 2 passes - instructions of set-up only) / 2N.
Run it in two worktrees to compare commits (docs/benchmarks-history.md, "The layered core
against its own pre-change commit").

Run (needs valgrind: `apt-get install valgrind`):
    PYTHONPATH=. python -m bench.instructions               # N = 10,000; about a minute
    PYTHONPATH=. python -m bench.instructions --events 5000 --no-gc
    PYTHONPATH=. python -m bench.instructions --metrics     # as with KIT_METRICS_PORT set
    PYTHONPATH=. python -m bench.instructions --json-logs   # as with KIT_LOG_FORMAT=json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys


def inner(events: int, passes: int, no_gc: bool, observe: list[str]) -> None:
    """The measured program: set up, then `passes` passes over the records."""
    if observe:  # kit.telemetry's switches, as kit.metrics and kit.logs set them
        from kit.telemetry import active

        active.timed = "metrics" in observe
        active.records = "json-logs" in observe
    from bench.common import Meter
    from bench.contenders.kit_service import make_service
    from bench.kit_breakdown import NullSink, messages
    from bench.reading import Reading
    from kit import Codec, load_settings
    from kit.dispatch import Dispatcher, Ticket

    topic = Reading.kit_schema().full_name
    batches = messages(topic, events, 500)
    settings = load_settings(bootstrap_servers="unused:9092")
    service = make_service(topic, "out", "g", Meter(0))
    dispatcher = Dispatcher(service, Codec(Reading.__kit_repository__), settings, NullSink())

    async def run() -> None:
        for _ in range(passes):
            for batch in batches:
                await dispatcher.handle_batch(batch, Ticket())

    if no_gc:
        gc.disable()
    asyncio.run(run())


def count(events: int, passes: int, no_gc: bool, observe: list[str]) -> int:
    """Instructions valgrind counts for one run of `inner`."""
    args = [sys.executable, "-m", "bench.instructions", "--inner", str(passes)]
    args += ["--events", str(events)] + (["--no-gc"] if no_gc else [])
    args += [f"--{name}" for name in observe]
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"bench.instructions: no count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--no-gc", action="store_true", help="garbage collection off")
    parser.add_argument("--metrics", action="store_true", help="time every handler call")
    parser.add_argument("--json-logs", action="store_true", help="set the current record")
    parser.add_argument("--inner", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    observe = [n for n, on in (("metrics", args.metrics), ("json-logs", args.json_logs)) if on]
    if args.inner is not None:
        inner(args.events, args.inner, args.no_gc, observe)
        return 0
    if shutil.which("valgrind") is None:
        print("bench.instructions: valgrind is not installed (apt-get install valgrind)")
        return 2
    base = count(args.events, 0, args.no_gc, observe)
    full = count(args.events, 2, args.no_gc, observe)
    per_event = (full - base) / (2 * args.events)
    print(
        json.dumps(
            {
                "events": args.events,
                "gc": not args.no_gc,
                "observe": observe or "off",
                "instructions_per_event": round(per_event),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
