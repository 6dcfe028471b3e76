"""Scale-out benchmark: events/s of `kit run --workers N` (N processes, one consumer group).

For each N (default 1 and 2), interleaved round by round, against the same broker:
  1. create a fresh input topic (6 partitions) and output topic;
  2. start `kit run --workers N bench.workers:service` (the real command: supervisor and
     worker processes; N = 1 runs in-process) and wait until every worker said ready;
  3. produce E `bench.Reading` events (the pipeline benchmark's records) as fast as one
     producer can, and time from the first produce until the output topic holds E records
     (its end offsets, polled every 20 ms);
  4. read each process's CPU seconds (/proc) and the broker's, then SIGTERM the command:
     each worker's stop line gives the records it handled.
The service is the pipeline benchmark's: Reading in, Reading (ok flipped) out, keyed like
its input. `--spin-us` adds that many microseconds of computation per event (a CPU-bound
handler). Prints JSON: events/s per N (median round), per process handled, CPU seconds,
events per CPU second; the broker's CPU seconds; the load average before each run.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.workers                       # E=200,000, N=1,2, 3 rounds
    PYTHONPATH=. python -m bench.workers --events 100000 --workers 1,2,3 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import cpu_seconds
from bench.reading import Reading, records
from kit import Context, Service

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
SPIN = float(os.environ.get("BENCH_WORKERS_SPIN_US", "0")) / 1e6
OUTPUT = os.environ.get("BENCH_WORKERS_OUTPUT", "bench.workers.out")

service = Service("bench-workers", version="1.0.0", description="Reading in, ok flipped out.")


@service.handler(topic=os.environ.get("BENCH_WORKERS_INPUT", "bench.workers.in"), partitions=6)
async def on_reading(event: Reading, ctx: Context) -> None:
    """Publish a copy with `ok` flipped (after SPIN seconds of computation)."""
    if SPIN:
        until = time.perf_counter() + SPIN
        while time.perf_counter() < until:
            pass
    ctx.publish(event.model_copy(update={"ok": not event.ok}), key=ctx.key, topic=OUTPUT)


def broker_pid() -> int | None:
    """The pid of the local broker's JVM (KIT_BROKER_DIR; a cluster's first node), if it
    runs here."""
    try:
        from kit.broker.local import status

        info = status(probe=False)
    except Exception:  # no local broker here: no broker figure
        return None
    if info is None:
        return None
    return next((n.pid for n in info.nodes if n.pid), None) or info.pid


def end_offsets(consumer: Consumer, topic: str) -> int:
    """The sum of `topic`'s end offsets."""
    total = 0
    for p in range(PARTITIONS):
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += high
    return total


def service_run(prefix: str, bootstrap: str) -> tuple[str, str, str, Any, dict[str, str]]:
    """A run's tag, fresh input and output topics (created), the admin client, and the
    environment of a `kit run` child in the run's own group (bench.workers, bench.soak)."""

    from bench.pipeline import create_topics

    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    source, output = f"{tag}-in", f"{tag}-out"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topics(admin, [source, output])
    env = {
        "PYTHONPATH": str(ROOT),
        "KIT_SCHEMAS_DIR": str(ROOT / "schemas"),
        "KIT_BOOTSTRAP_SERVERS": bootstrap,
        "KIT_GROUP_ID": f"{tag}-g",
    }
    return tag, source, output, admin, env


def one_run(
    args: argparse.Namespace, workers: int, data: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """Start the command, feed it, time it, stop it; its figures."""
    from bench.pipeline import delete_topics, prefill
    from kit.testing.process import OutputLines, spawn_python

    tag, source, output, admin, env = service_run("bench-workers", args.bootstrap)
    env.update({
        "BENCH_WORKERS_INPUT": source,
        "BENCH_WORKERS_OUTPUT": output,
        "BENCH_WORKERS_SPIN_US": str(args.spin_us),
    })  # fmt: skip
    command = ["-m", "kit.cli", "run", "--workers", str(workers), "bench.workers:service"]
    proc = spawn_python(command, env=env, cwd=ROOT)
    out = OutputLines(proc)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{tag}-probe"})
    try:
        ready = out.wait(
            lambda lines: (
                r if len(r := [ln for ln in lines if "workers ready:" in ln]) >= workers else None
            ),
            120,
            f"{workers} ready lines",
        )
        pids = [int(m.group(1)) for ln in ready if (m := re.search(r"pid (\d+)\]", ln))]
        pids = pids or [proc.pid]
        broker = broker_pid()
        watched = [*pids, proc.pid, *([broker] if broker else [])]
        cpu0 = {pid: cpu_seconds(pid) or 0.0 for pid in watched}
        load = os.getloadavg()[0]
        started = time.monotonic()
        prefill(args.bootstrap, source, data)
        produced = time.monotonic() - started
        deadline = started + args.timeout
        while end_offsets(consumer, output) < len(data):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"not done in time:\n{''.join(out.lines[-20:])}")
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        cpu = {pid: round((cpu_seconds(pid) or 0.0) - c, 2) for pid, c in cpu0.items()}
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        handled = _handled(out, pids, workers)
    finally:
        consumer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        delete_topics(admin, [source, output, f"{source}.dlt"])
    return {
        "workers": workers,
        "events": len(data),
        "events_per_s": round(len(data) / elapsed),
        "seconds": round(elapsed, 2),
        "produce_seconds": round(produced, 2),
        "exit_code": code,
        "load_before": round(load, 2),
        "processes": [
            {
                "pid": pid,
                "handled": handled.get(pid),
                "cpu_s": cpu[pid],
                "events_per_cpu_s": round(handled[pid] / cpu[pid])
                if handled.get(pid) and cpu[pid]
                else None,
            }
            for pid in pids
        ],
        "supervisor_cpu_s": cpu[proc.pid] if workers > 1 else None,
        "broker_cpu_s": cpu.get(broker) if broker else None,
    }


def _handled(out: Any, pids: list[int], workers: int) -> dict[int, int]:
    """Records each worker handled, from its `... stopped: N handled` log line."""
    found: dict[int, int] = {}
    for line in out.lines:
        m = re.search(r"stopped: (\d+) handled", line)
        if m:
            p = re.search(r"pid (\d+)\]", line)
            found[int(p.group(1)) if p and workers > 1 else pids[0]] = int(m.group(1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--spin-us", type=float, default=0.0, help="CPU work per event (us)")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--timeout", type=float, default=300.0, help="per run (s)")
    args = parser.parse_args()
    if not args.bootstrap:
        from kit.broker.local import running_address

        args.bootstrap = running_address() or "127.0.0.1:9092"
    counts = [int(n) for n in args.workers.split(",")]
    data = records(args.events)
    runs: list[dict[str, Any]] = []
    for _round in range(args.repeat):
        for n in counts:
            result = one_run(args, n, data)
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    rows = []
    for n in counts:
        mine = sorted((r for r in runs if r["workers"] == n), key=lambda r: r["events_per_s"])
        row = dict(mine[(len(mine) - 1) // 2])
        row["all_events_per_s"] = [r["events_per_s"] for r in runs if r["workers"] == n]
        rows.append(row)
    from bench.report import machine

    report = {
        "command": "python -m bench.workers " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.bootstrap),
        "events": args.events,
        "spin_us": args.spin_us,
        "median_events_per_s": {r["workers"]: r["events_per_s"] for r in rows},
        "results": rows,
        "spread": {r["workers"]: round(statistics.pstdev(r["all_events_per_s"])) for r in rows},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
