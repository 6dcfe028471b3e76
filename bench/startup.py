"""Start-up benchmark: `kit run` to ready, `Runtime.start()`, and `Client()` to the first answer.

Three figures, each the median of `--repeat` runs against the same broker (topics existing,
as on every start but a service's first):
  run_to_ready_s     `python -m kit.cli run tests.fixtures.billing:service` from spawn to
                     its line "billing ready: ... assigned, announced" (interpreter and
                     imports included); also split at the "connected to" log line, which
                     the runtime writes once `Runtime.start` opened the transport;
  runtime_start_s    in this process: `await Runtime(billing).start()` (topics checked,
                     schemas published, extensions set up, subscribed), and
  start_to_ready_s   from before that start to ready (assigned and announced);
  client_first_call_s in this process: `Client(settings)`, `async with` it, and its first
                     request to a running `kit run tests.fixtures.stockroom:service`
                     answered (the first call starts the reply topic and its reader).
The kit measured is the one Python imports (PYTHONPATH), so a worktree of an older commit
measures that commit: PYTHONPATH=/tmp/w-before python /path/to/bench/startup.py.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.startup                      # 5 repetitions
    PYTHONPATH=. python -m bench.startup --repeat 9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kit
from kit import Client, Runtime, Settings, load_settings
from kit.testing.process import OutputLines, spawn_python

ROOT = Path(kit.__file__).resolve().parents[1]
"""The checkout whose kit is measured (its tests.fixtures are the services run)."""


class Timed(OutputLines):
    """OutputLines that notes when each line arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.arrived: list[tuple[float, str]] = []
        super().__init__(proc, echo=lambda line: self.arrived.append((time.monotonic(), line)))

    def at(self, text: str, timeout: float = 60) -> float:
        """When the first line with `text` arrived (waiting for it)."""
        self.wait_for(text, timeout)
        return next(t for t, line in self.arrived if text in line)


def spawn(target: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], Timed]:
    proc = spawn_python(
        ["-m", "kit.cli", "run", target], env={"PYTHONPATH": str(ROOT), **env}, cwd=ROOT
    )
    return proc, Timed(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_to_ready(env: dict[str, str]) -> dict[str, float]:
    """One `kit run` of billing: seconds from spawn to connected, and to ready."""
    started = time.monotonic()
    proc, out = spawn("tests.fixtures.billing:service", env)
    try:
        connected = out.at("connected to")
        ready = out.at("kit: billing ready:")
    finally:
        stop(proc)
    return {"run_to_connected_s": connected - started, "run_to_ready_s": ready - started}


async def runtime_start(settings: Settings) -> dict[str, float]:
    """`Runtime.start()` of billing in this process, and from its start to ready."""
    from tests.fixtures.billing import service

    runtime = Runtime(service, settings)
    started = time.monotonic()
    await runtime.start()
    opened = time.monotonic()
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.ready.wait(), 60)
    if runtime.announcer is not None:
        await asyncio.wait_for(runtime.announcer.announced.wait(), 60)
    ready = time.monotonic()
    runtime.stop()
    await asyncio.wait_for(task, 60)
    return {"runtime_start_s": opened - started, "start_to_ready_s": ready - started}


async def client_first_call(settings: Settings) -> float:
    """`Client(settings)` to its first request answered by the running stockroom."""
    from tests.fixtures.events import CheckStock
    from tests.fixtures.stockroom import check_stock

    started = time.monotonic()
    async with Client(settings) as client:
        level = await client.request(check_stock, CheckStock(sku="tea", quantity=1))
        answered = time.monotonic()
    assert level.sku == "tea"
    return answered - started


def median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    args = parser.parse_args()
    if not args.bootstrap:
        from kit.broker.local import running_address

        args.bootstrap = running_address() or "127.0.0.1:9092"
    os.environ["KIT_BOOTSTRAP_SERVERS"] = args.bootstrap
    settings = load_settings()
    env = {"KIT_BOOTSTRAP_SERVERS": args.bootstrap}
    load = os.getloadavg()[0]
    runs: list[dict[str, float]] = []
    run_to_ready({**env, "KIT_GROUP_ID": f"bench-startup-{uuid.uuid4().hex[:8]}"})  # topics
    for _ in range(args.repeat):
        group = f"bench-startup-{uuid.uuid4().hex[:8]}"
        row = run_to_ready({**env, "KIT_GROUP_ID": group})
        row.update(asyncio.run(runtime_start(settings.model_copy(update={"group_id": group}))))
        runs.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    responder, out = spawn("tests.fixtures.stockroom:service", env)
    try:
        out.at("kit: stockroom ready:")  # registered on the broker: a Client finds it now
        calls = [asyncio.run(client_first_call(settings)) for _ in range(args.repeat)]
    finally:
        stop(responder)
    from bench.report import machine

    report: dict[str, Any] = {
        "command": "python -m bench.startup " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kit": str(ROOT),
        "machine": machine(args.bootstrap),
        "load_before": round(load, 2),
        "repeat": args.repeat,
        **{key: median(runs, key) for key in runs[0]},
        "client_first_call_s": round(statistics.median(calls), 3),
        "all": {"runs": runs, "client_first_call_s": [round(c, 3) for c in calls]},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
