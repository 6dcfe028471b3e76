"""Soak benchmark: one kit service process's RSS over 1,000,000 events and 100,000 calls.

One `kit run bench.soak:service` process runs a handler that publishes a copy of each
`bench.Reading` (the pipeline benchmark's kit contender) and a responder
(bench.CheckStock → bench.StockLevel, the request-reply benchmark's). This process:
  1. creates fresh input and output topics (6 partitions) and pre-fills the input with N
     Readings (in chunks of 100,000, so this process stays small);
  2. starts the service (fresh consumer group) and, once it is ready, samples its RSS
     (/proc/<pid>/status VmRSS) every second, with the output topic's end offsets and the
     calls answered so far;
  3. times the N events, from the ready line until the output holds N records;
  4. makes M calls from a kit Client here, closed loop, 64 in flight, and times them;
  5. checks the group committed the input's end offsets, stops the service with SIGTERM
     and reads its `stopped: H handled` line.
The verdict: every RSS sample from the one at 100k events (N/10 if that is less) on stays
within 10% of it. Counts: output records = N, committed = N, every call answered.

With a backlog, librdkafka's fetch queue (queued.max.messages.kbytes, 64 MiB by default)
fills and drains: RSS moves by tens of MiB without a leak. KIT_KAFKA_QUEUED_MAX_MESSAGES_KBYTES
(passed through to librdkafka) bounds it.

`--trace PREFIX` runs the service with tracemalloc (25 frames; much slower): it writes
PREFIX.events-end.txt and PREFIX.calls-end.txt, the allocations grown since the baseline.

Run (broker: `python -m kit.cli broker start`; KIT_BOOTSTRAP_SERVERS picks another):
    PYTHONPATH=. python -m bench.soak                             # N=1,000,000, M=100,000
    PYTHONPATH=. python -m bench.soak --events 2000 --calls 200   # a few seconds
    PYTHONPATH=. python -m bench.soak --out /tmp/soak.json --plot docs/soak.png
`--plot` needs matplotlib already installed (it is no dependency of kit); else it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.reading import Reading
from bench.stock import CheckStock, StockLevel
from kit import Context, Service

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 100_000
IN_FLIGHT = 64
TRACE = os.environ.get("BENCH_SOAK_TRACE", "")
OUTPUT = os.environ.get("BENCH_SOAK_OUTPUT", "bench.soak.out")

service = Service(os.environ.get("BENCH_SOAK_SERVICE", "bench-soak"), version="1.0.0")


def baseline(events: int) -> int:
    """The event count whose RSS is the reference: 100k, or N/10 for a short run."""
    return max(1, min(100_000, events // 10))


class _Trace:
    """tracemalloc snapshots in the service at the baseline and at the end of each phase."""

    def __init__(self, prefix: str) -> None:
        import tracemalloc

        self.prefix = prefix
        self.events = int(os.environ.get("BENCH_SOAK_EVENTS", "0"))
        self.calls = int(os.environ.get("BENCH_SOAK_CALLS", "0"))
        self.base_at = baseline(self.events)
        self.counts = {"events": 0, "calls": 0}
        self.base: Any = None
        tracemalloc.start(25)

    def tick(self, what: str) -> None:
        """Count one event or call; snapshot at the marks."""
        import gc
        import tracemalloc

        self.counts[what] += 1
        n = self.counts[what]
        if what == "events" and n == self.base_at:
            gc.collect()
            self.base = tracemalloc.take_snapshot()
        elif self.base is not None and n == (self.events if what == "events" else self.calls):
            gc.collect()
            diff = tracemalloc.take_snapshot().compare_to(self.base, "traceback")
            lines = [f"{what} end: top growth since event {self.base_at}"]
            for stat in diff[:15]:
                lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
                lines += ["    " + ln for ln in stat.traceback.format(limit=8)]
            Path(f"{self.prefix}.{what}-end.txt").write_text("\n".join(lines) + "\n")


_trace = _Trace(TRACE) if TRACE else None


@service.handler(topic=os.environ.get("BENCH_SOAK_INPUT", "bench.soak.in"), partitions=6)
async def on_reading(event: Reading, ctx: Context) -> None:
    """Publish a copy with `ok` flipped, keyed like the input (the pipeline's kit handler)."""
    ctx.publish(event.model_copy(update={"ok": not event.ok}), key=ctx.key, topic=OUTPUT)
    if _trace is not None:
        _trace.tick("events")


@service.responder(partitions=4)
async def check(request: CheckStock) -> StockLevel:
    """Answer at once (bench.rpc_responder's answer)."""
    if _trace is not None:
        _trace.tick("calls")
    return StockLevel(sku=request.sku, available=10, enough=request.quantity <= 10)


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Every `interval` s: the service's RSS, the output's records, the calls answered."""

    def __init__(self, pid: int, bootstrap: str, output: str, interval: float = 1.0) -> None:
        super().__init__(name="bench-soak-sampler", daemon=True)
        from confluent_kafka import Consumer

        self.pid, self.output, self.interval = pid, output, interval
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-soak-probe"})
        self.samples: list[dict[str, Any]] = []
        self.calls = 0
        self.phase = "events"
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        from bench.workers import end_offsets

        try:
            while True:
                self.sample(end_offsets(self.consumer, self.output))
                if self.stopping.wait(self.interval):
                    return
        finally:
            self.consumer.close()

    def sample(self, events: int) -> dict[str, Any]:
        """Record one sample now (also called at the phase ends)."""
        row = {
            "t": round(time.monotonic() - self.started, 2),
            "rss_mb": round(rss_mb(self.pid), 1),
            "events": events,
            "calls": self.calls,
            "phase": self.phase,
        }
        self.samples.append(row)
        return row

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self.stopping.set()
        self.join(30)


def prefill_readings(bootstrap: str, topic: str, count: int) -> float:
    """Write `count` Readings (as bench.reading.records) in chunks; seconds it took."""
    from bench.pipeline import prefill
    from bench.reading import reading
    from kit import Codec

    codec, started = Codec(), time.monotonic()
    for first in range(0, count, CHUNK):
        ids = range(first, min(count, first + CHUNK))
        prefill(
            bootstrap,
            topic,
            [(f"probe-{n % 1000:04d}".encode(), codec.encode(reading(n))) for n in ids],
        )
    return time.monotonic() - started


async def call_loop(bootstrap: str, name: str, calls: int, sampler: Sampler) -> dict[str, Any]:
    """M calls from a kit Client, `IN_FLIGHT` callers each sending its next call at once."""
    from kit import Client, load_settings

    errors: dict[str, int] = {}
    async with Client(load_settings(bootstrap_servers=bootstrap)) as client:
        request = CheckStock(sku="tea", quantity=1)

        async def caller(todo: Any) -> None:
            for _ in todo:
                try:
                    await client.request(f"{name}.check", request, reply=StockLevel, timeout=30)
                    sampler.calls += 1
                except Exception as exc:  # counted and reported: the check is "all answered"
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        started = time.perf_counter()
        todo = iter(range(calls))  # shared: each call is made once
        await asyncio.gather(*(caller(todo) for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - started
        late = client.requester.late_replies
    return {"seconds": round(seconds, 2), "errors": errors, "late_replies": late}


def committed(bootstrap: str, group: str, topic: str, want: int, timeout: float = 30) -> int:
    """The group's committed offsets on `topic`, summed; polled until `want` or timeout."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline, total = time.monotonic() + timeout, 0
    try:
        while True:
            parts = [TopicPartition(topic, p) for p in range(6)]
            total = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
            if total >= want or time.monotonic() > deadline:
                return total
            time.sleep(0.2)
    finally:
        consumer.close()


def run_service(args: argparse.Namespace, sampler_box: list[Sampler]) -> dict[str, Any]:
    """Topics, pre-fill, the service process, both phases, the checks; the raw figures."""
    from confluent_kafka import Consumer

    from bench.pipeline import delete_topics
    from bench.workers import end_offsets, service_run
    from kit.testing.process import OutputLines, spawn_python

    tag, source, output, admin, env = service_run("bench-soak", args.bootstrap)
    group = env["KIT_GROUP_ID"]
    env.update({
        "BENCH_SOAK_SERVICE": tag,
        "BENCH_SOAK_INPUT": source,
        "BENCH_SOAK_OUTPUT": output,
        "BENCH_SOAK_EVENTS": str(args.events),
        "BENCH_SOAK_CALLS": str(args.calls),
        "BENCH_SOAK_TRACE": args.trace,
    })  # fmt: skip
    out: dict[str, Any] = {"load_before": round(os.getloadavg()[0], 2)}
    proc = None
    try:
        out["prefill_s"] = round(prefill_readings(args.bootstrap, source, args.events), 1)
        proc = spawn_python(["-m", "kit.cli", "run", "bench.soak:service"], env=env, cwd=ROOT)
        lines = OutputLines(proc)
        lines.wait(lambda ls: any(" ready:" in ln for ln in ls) or None, 120, "ready line")
        sampler = Sampler(proc.pid, args.bootstrap, output)
        sampler.start()
        sampler_box.append(sampler)
        started, probe = (
            time.monotonic(),
            Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{tag}-probe"}),
        )
        try:
            while (done := end_offsets(probe, output)) < args.events:
                if time.monotonic() - started > args.timeout or proc.poll() is not None:
                    raise RuntimeError(f"events not done ({done}):\n{''.join(lines.lines[-20:])}")
                time.sleep(0.02)
        finally:
            probe.close()
        out["events_s"] = round(time.monotonic() - started, 2)
        out["rss_events_end_mb"] = sampler.sample(done)["rss_mb"]
        sampler.phase = "calls"
        out["calls"] = asyncio.run(call_loop(args.bootstrap, tag, args.calls, sampler))
        out["rss_calls_end_mb"] = sampler.sample(done)["rss_mb"]
        sampler.stop()
        out["output_records"] = done
        out["committed"] = committed(args.bootstrap, group, source, args.events)
        out["load_after"] = round(os.getloadavg()[0], 2)
        proc.send_signal(signal.SIGTERM)
        out["exit_code"] = proc.wait(60)
        found = [m for ln in lines.lines if (m := re.search(r"stopped: (\d+) handled", ln))]
        out["handled"] = int(found[-1].group(1)) if found else None
        return out
    finally:
        if sampler_box:
            sampler_box[0].stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        delete_topics(admin, [source, output, f"{source}.dlt", f"{tag}.check"])


def summarize(
    args: argparse.Namespace, raw: dict[str, Any], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """The report: RSS at the marks, the verdict, the rates and the counts."""
    base_at = baseline(args.events)
    after = [s for s in samples if s["events"] >= base_at]
    base = after[0]["rss_mb"] if after else 0.0
    worst = max(after, key=lambda s: abs(s["rss_mb"] - base), default=None)
    drift = (worst["rss_mb"] - base) / base if worst and base else 0.0
    calls = raw["calls"]
    answered = args.calls - sum(calls["errors"].values())
    return {
        "events": args.events,
        "calls": args.calls,
        "in_flight": IN_FLIGHT,
        "baseline_events": base_at,
        "rss_mb": {
            f"at_{base_at}_events": base,
            "events_end": raw["rss_events_end_mb"],
            "calls_end": raw["rss_calls_end_mb"],
            "max": max((s["rss_mb"] for s in samples), default=0.0),
            "max_after_baseline": max((s["rss_mb"] for s in after), default=0.0),
        },
        "largest_drift_pct": round(100 * drift, 1),
        "largest_growth_pct": round(100 * (max(s["rss_mb"] for s in after) / base - 1), 1)
        if after and base
        else 0.0,
        "verdict": (
            f"RSS after warm-up {'stays' if abs(drift) <= 0.10 else 'does NOT stay'} within 10% "
            f"of its level at {base_at} events ({base} MiB; largest drift {100 * drift:+.1f}%)"
        ),
        "events_per_s": round(args.events / raw["events_s"]) if raw["events_s"] else 0,
        "calls_per_s": round(args.calls / calls["seconds"]) if calls["seconds"] else 0,
        "checks": {
            "output_records": raw["output_records"],
            "output_equals_events": raw["output_records"] == args.events,
            "committed": raw["committed"],
            "committed_equals_end_offsets": raw["committed"] == args.events,
            "calls_answered": answered,
            "all_calls_answered": answered == args.calls,
            "call_errors": calls["errors"],
            "late_replies": calls["late_replies"],
            "service_handled": raw["handled"],
            "exit_code": raw["exit_code"],
        },
        "load": {"before": raw["load_before"], "after": raw["load_after"]},
        "seconds": {
            "prefill": raw["prefill_s"],
            "events": raw["events_s"],
            "calls": calls["seconds"],
        },
        "samples": len(samples),
    }


def plot(samples: list[dict[str, Any]], report: dict[str, Any], path: str) -> str:
    """A small PNG of RSS over time with the ±10% band, if matplotlib is importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (it is not a dependency of kit)"
    base = next(iter(report["rss_mb"].values()))
    fig, ax = plt.subplots(figsize=(6, 2.8), dpi=100)
    for phase, colour in (("events", "tab:blue"), ("calls", "tab:orange")):
        mine = [s for s in samples if s["phase"] == phase]
        ax.plot([s["t"] for s in mine], [s["rss_mb"] for s in mine], colour, label=phase)
    ax.axhspan(base * 0.9, base * 1.1, color="0.9", label="±10% of baseline")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(s["rss_mb"] for s in samples) * 1.2)
    ax.set_title(f"kit service: {report['events']:,} events, then {report['calls']:,} calls")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"plot written to {path}"


def main() -> int:
    """Run the soak; print the report as JSON; write the samples and the plot if asked."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--out", default="", help="write the report and every sample here (JSON)")
    parser.add_argument("--plot", default="", help="write a PNG of RSS over time (matplotlib)")
    parser.add_argument("--trace", default="", help="tracemalloc diffs in the service to PREFIX.*")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--timeout", type=float, default=900.0, help="for the events (s)")
    args = parser.parse_args()
    if not args.bootstrap:
        from kit.broker.local import running_address

        args.bootstrap = running_address() or "127.0.0.1:9092"
    from bench.report import machine

    box: list[Sampler] = []
    raw = run_service(args, box)
    samples = box[0].samples
    report = {
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.bootstrap),
        **summarize(args, raw, samples),
    }
    if args.plot:
        print(plot(samples, report, args.plot), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({**report, "samples": samples}, indent=1) + "\n")
    print(json.dumps(report, indent=2))
    checks = report["checks"]
    ok = checks["output_equals_events"] and checks["committed_equals_end_offsets"]
    return 0 if ok and checks["all_calls_answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
