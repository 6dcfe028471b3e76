"""Request-reply benchmark: latency with 1 call in flight, throughput with 64 and 256 in flight.

kit: a responder (bench.CheckStock → bench.StockLevel) runs under `kit run`-like
conditions in its own process; the caller is a `kit.Client` in this process.
Faust: an agent that yields a reply runs in its own worker process; the caller is a second
Faust worker process that measures `agent.ask()` and prints its figures (see
bench/faust_rpc.py for why, and for the workaround of a faust-streaming 0.15.3 bug).
Same broker, same run.

Also the ceiling (bench/rpc_ceiling.py): a hand-written confluent-kafka request-reply loop,
bare and with kit's Avro + pydantic work, so kit is reported as a ratio of each. Asked for
by name, `kit-caller` (kit.Client against the typed ceiling's responder) and
`kit-responder` (the typed ceiling's caller against `kit run`) tell which side of kit costs
what.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.rpc                        # all four, write docs
    PYTHONPATH=. python -m bench.rpc --only kit --no-doc --latency 500 --requests 5000
    PYTHONPATH=. python -m bench.rpc --only kit,kit-caller,kit-responder,ceiling-typed
Prints JSON; appends a table to docs/benchmarks-history.md unless --no-doc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def measure(
    call: Any,
    latency_n: int,
    requests: int,
    warmup: int,
    gather: bool = False,
    responder_pid: int | None = None,
) -> dict[str, Any]:
    """Latency of `latency_n` sequential calls, then throughput at 64 and 256 in flight
    (closed loop: that many callers; with `gather`, a task per call behind a semaphore),
    with the CPU per call of this process and of the process `responder_pid`."""
    from bench.rpc_ceiling import CpuMeter

    for i in range(warmup):
        await call(i)
    lat = []
    for i in range(latency_n):
        t = time.perf_counter()
        await call(i)
        lat.append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {
        "p50_ms": round(percentile(lat, 50), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(max(lat), 3),
        "mean_ms": round(statistics.fmean(lat), 3),
        "latency_samples": latency_n,
    }
    cpu = CpuMeter(responder_pid)
    for depth in (64, 256):
        took: list[float] = []
        cpu.start()
        t = time.perf_counter()
        if gather:  # the old method: a task per call, all made at once, a semaphore
            sem = asyncio.Semaphore(depth)

            async def bounded(i: int, sem: asyncio.Semaphore = sem, took: list = took) -> None:
                async with sem:
                    began = time.perf_counter()
                    await call(i)
                    took.append((time.perf_counter() - began) * 1000)

            await asyncio.gather(*(bounded(i) for i in range(requests)))
        else:  # closed loop, as the ceiling: `depth` callers, each sends its next call at once

            async def caller(calls: Any, took: list[float] = took) -> None:
                for i in calls:
                    began = time.perf_counter()
                    await call(i)
                    took.append((time.perf_counter() - began) * 1000)

            calls = iter(range(requests))  # shared: each call is made once
            await asyncio.gather(*(caller(calls) for _ in range(depth)))
        out[f"rps_{depth}"] = round(requests / (time.perf_counter() - t))
        out[f"cpu_us_{depth}"] = cpu.per_call(requests)
        out[f"p50_{depth}_ms"] = round(percentile(took, 50), 3)
        out[f"p99_{depth}_ms"] = round(percentile(took, 99), 3)
    out["throughput_requests"] = requests
    return out


def start(args: list[str], ready: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a helper process and wait (60 s at most) for a line containing `ready`."""
    from kit.testing.process import OutputLines, spawn_python

    proc = spawn_python(args, env=env, cwd=ROOT)
    try:  # OutputLines keeps reading: a chatty helper never blocks on a full pipe
        OutputLines(proc).wait_for(ready, timeout=60)
    except TimeoutError as exc:
        proc.kill()
        raise SystemExit(f"python {' '.join(args)} did not become ready: {exc}") from None
    return proc


@contextlib.contextmanager
def kit_responder(bootstrap: str) -> Iterator[tuple[str, int]]:
    """`kit run bench.rpc_responder:service` in a process of its own, for the block; yields
    the service's name (its method `check` answers on the topic `<name>.check`) and pid."""
    service = f"bench-rpc-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KIT_BOOTSTRAP_SERVERS": bootstrap,
        "BENCH_RPC_SERVICE": service,
        "KIT_LOG_LEVEL": "INFO",
    }
    # `kit run` says ready once its registration is on the broker: a Client finds it then
    proc = start(["-m", "kit.cli", "run", "bench.rpc_responder:service"], " ready: ", env)
    try:
        yield service, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


async def kit_calls(
    bootstrap: str,
    service: str,
    args: argparse.Namespace,
    responder_pid: int,
    *,
    fail_fast: bool | None = None,
) -> dict[str, Any]:
    """Measure `kit.Client.request` calls to `<service>.check` (answered by the process
    `responder_pid`)."""
    from bench.stock import CheckStock, StockLevel
    from kit import Client, load_settings

    settings = load_settings(bootstrap_servers=bootstrap)
    async with Client(settings, fail_fast=fail_fast) as client:
        request = CheckStock(sku="tea", quantity=1)

        async def call(_i: int) -> None:
            await client.request(f"{service}.check", request, reply=StockLevel, timeout=30)

        result = await measure(
            call, args.latency, args.requests, args.warmup, args.gather, responder_pid
        )
        result["late_replies"] = client.requester.late_replies
        return result


async def bench_kit(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """kit: Client.request against a responder in another process."""
    with kit_responder(bootstrap) as (service, pid):
        return await kit_calls(bootstrap, service, args, pid)


async def bench_kit_caller(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """kit's caller alone: Client.request against the typed hand-written responder (which
    is not in the registry: the Client does not fail fast)."""
    from bench.rpc_ceiling import created, responder_process

    service = f"bench-rpc-{uuid.uuid4().hex[:6]}"
    topic = f"{service}.check"
    with created(bootstrap, {topic: 4}), responder_process(bootstrap, topic, True) as pid:
        return await kit_calls(bootstrap, service, args, pid, fail_fast=False)


async def bench_kit_responder(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """kit's responder alone: the typed hand-written caller against `kit run`."""
    from bench.rpc_ceiling import call_topic

    with kit_responder(bootstrap) as (service, pid):
        topic = f"{service}.check"
        return await asyncio.to_thread(call_topic, bootstrap, topic, True, args, pid)


async def bench_faust(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """Faust: agent.ask() from a caller worker against an agent in a server worker.

    Both sides are Faust workers (bench/faust_rpc.py). The caller is a worker process, not an
    app in this process: ask() needs a running Faust app to collect replies, and such an app's
    stop() can wait forever on un-acked replies while swallowing cancellation, so no bound
    could be kept here. The caller runs `measure()` itself and prints one JSON line; every
    wait below is bounded and ends with the workers killed.
    """
    import shutil
    import tempfile
    from collections import deque

    from confluent_kafka.admin import AdminClient, NewTopic

    suffix = uuid.uuid4().hex[:6]
    topic = f"bench-faust-rpc-{suffix}"
    reply_to = f"bench-faust-reply-{suffix}"
    # the kit broker does not auto-create topics: create the agent's topic up front; Faust
    # declares the caller's reply topic itself
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_FAUST_TOPIC": topic,
        "BENCH_FAUST_REPLY_TO": reply_to,
        "BENCH_FAUST_BROKER": f"kafka://{bootstrap}",
        "BENCH_FAUST_LATENCY": str(args.latency),
        "BENCH_FAUST_REQUESTS": str(args.requests),
        "BENCH_FAUST_WARMUP": str(args.warmup),
    }
    procs: list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]] = []

    async def worker(role: str, markers: tuple[str, ...], timeout: float) -> tuple[str, deque]:
        """Start a worker; return the first output line with one of `markers` (bounded)."""
        proc = await asyncio.create_subprocess_exec(
            # --without-web: the worker CLI turns Faust's web server (port 6066) back on
            *(sys.executable, "-m", "bench.faust_rpc", "worker", "-l", "info", "--without-web"),
            cwd=workdir,  # Faust makes an (empty) `<app id>-data` directory there
            env={**env, "BENCH_FAUST_ROLE": role},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
        )
        tail: deque[str] = deque(maxlen=30)
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def pump() -> None:  # keep reading, so a chatty worker never blocks on the pipe
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                tail.append(line)
                if not found.done() and any(m in line for m in markers):
                    found.set_result(line)
            if not found.done():
                found.set_exception(RuntimeError(f"faust {role} exited: {' | '.join(tail)}"))

        procs.append((proc, asyncio.create_task(pump())))
        try:
            return await asyncio.wait_for(asyncio.shield(found), timeout), tail
        except TimeoutError:
            found.cancel()
            msg = f"faust {role}: nothing after {timeout:.0f}s: {' | '.join(tail)}"
            raise RuntimeError(msg) from None

    workdir = tempfile.mkdtemp(prefix="bench-faust-rpc-")
    try:
        await worker("server", ("[^Worker]: Ready",), 60)
        # markers and JSON as printed by bench/faust_rpc.py's caller task
        calls = args.warmup + args.latency + 2 * args.requests
        line, tail = await worker(
            "caller", ("BENCH_FAUST_RESULT ", "BENCH_FAUST_ERROR "), 60 + 0.02 * calls
        )
        if "BENCH_FAUST_RESULT " not in line:
            raise RuntimeError(f"{line} | {' | '.join(tail)}")
        return json.loads(line.split("BENCH_FAUST_RESULT ", 1)[1])
    finally:
        for proc, pump in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            try:
                await asyncio.wait_for(pump, 5)
            except TimeoutError:
                pump.cancel()
        for future in admin.delete_topics([topic, reply_to], operation_timeout=10).values():
            try:
                future.result(15)
            except Exception:  # best effort: one that was never created is fine
                pass
        shutil.rmtree(workdir, ignore_errors=True)


async def bench_ceiling_bare(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling: a hand-written confluent-kafka request-reply loop (bench/rpc_ceiling.py)."""
    from bench.rpc_ceiling import run_variant

    return await asyncio.to_thread(run_variant, bootstrap, False, args)


async def bench_ceiling_typed(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling with kit's per-call work: Avro framing and pydantic validation."""
    from bench.rpc_ceiling import run_variant

    return await asyncio.to_thread(run_variant, bootstrap, True, args)


RUNNERS = {
    "kit": bench_kit,
    "ceiling-bare": bench_ceiling_bare,
    "ceiling-typed": bench_ceiling_typed,
    "faust": bench_faust,
    "kit-caller": bench_kit_caller,
    "kit-responder": bench_kit_responder,
}
DEFAULT = "kit,ceiling-bare,ceiling-typed,faust"
"""What runs without --only: kit-caller and kit-responder (each side of kit against the
other side of the typed ceiling, to tell which side costs what) are asked for by name."""


def main() -> int:
    """Run the benchmark; print JSON; append to docs/benchmarks-history.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=int, default=2000, help="sequential calls")
    parser.add_argument("--requests", type=int, default=20000, help="calls per depth")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--only", default=DEFAULT, help=f"of {','.join(RUNNERS)}")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--gather", action="store_true", help="kit: a task per call + semaphore (the old method)"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KIT_BOOTSTRAP_SERVERS")
    if not bootstrap:
        from kit.broker.local import ensure_running

        bootstrap = ensure_running().bootstrap_servers
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        runner = RUNNERS[name]
        try:
            results[name] = asyncio.run(runner(bootstrap, args))
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(results, indent=2))
    if not args.no_doc:
        from bench.report import INTRO, machine

        info = machine(bootstrap)
        info = {k: info[k] for k in ("nproc", "cpu", "python", "broker")}
        doc = ROOT / "docs" / "benchmarks-history.md"
        text = doc.read_text() if doc.exists() else INTRO + "\n"
        doc.write_text(text.rstrip("\n") + "\n\n" + rpc_table(results, args, info))
    return 0


def rpc_table(results: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """The Markdown section for docs/benchmarks-history.md."""
    lines = [
        f"### Request-reply ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `PYTHONPATH=. python -m bench.rpc --latency {args.latency} "
        f"--requests {args.requests}`. Machine: {info}.",
        "",
        "| contender | p50 ms | p99 ms | max ms | req/s @64 | req/s @256 | p50/p99 ms @256 "
        "| CPU µs per call @256, caller/responder |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | |")
            continue
        cpu = r.get("cpu_us_256", {})
        lines.append(
            f"| {name} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['rps_64']} "
            f"| {r['rps_256']} | {r.get('p50_256_ms')}/{r.get('p99_256_ms')} "
            f"| {cpu.get('caller', '')}/{cpu.get('responder', '')} |"
        )
    kit = results.get("kit")
    for other in ("ceiling-bare", "ceiling-typed"):
        r = results.get(other)
        if kit is not None and r is not None and "error" not in kit and "error" not in r:
            lines.append("")
            lines.append(
                f"kit/{other}: throughput @256 {kit['rps_256'] / r['rps_256']:.2f}x, "
                f"p50 one in flight {kit['p50_ms'] / r['p50_ms']:.2f}x."
            )
    both = [results.get("kit"), results.get("faust")]
    if all(r is not None and "error" not in r for r in both):
        k, f = results["kit"], results["faust"]
        lines.append("")
        lines.append(
            f"Ratios kit/faust: p50 {k['p50_ms'] / f['p50_ms']:.2f}x, "
            f"throughput @256 {k['rps_256'] / f['rps_256']:.2f}x."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
