"""Where request-reply's time goes, measured in-process without a broker.

Three figures, each the best of several runs, in microseconds per call:

- **caller**: `Requester.call` in a closed loop (1 and 256 calls in flight), as
  `Client.request` makes it: encode the request, headers, the deadline timer, the turn
  batch, then the reply matched, decoded and validated. The wire is fake: each loop turn's
  requests are answered with one batch of replies on the next turn, handed over as the
  reply reader thread hands them (`Requester._deliver` on the loop).
- **responder**: `Dispatcher.handle_partition` on batches of 100 real
  `confluent_kafka.Message` requests (decode, validate, the responder, encode, the reply
  with its headers), with a sink that confirms each reply at once.
- **typed work**: what a call's Avro and pydantic work costs alone (encode and decode of
  the request and of the reply, `kit.Codec`), the part the typed ceiling of `bench.rpc`
  also does.
- **hand-off**: the time from a thread's `call_soon_threadsafe` to its callback running on
  an idle event loop (p50 and p90 over `--hand-offs` samples, microseconds). kit's reply
  reader and its runtime's consumer thread hand each fetched batch to the loop this way;
  a hand-written loop that polls in its one thread has no such step. At one call in
  flight a call crosses two: the responder's requests, then the caller's replies.

What is left of a process's CPU per call in `bench.rpc` beyond these is the thread
hand-offs, the loop's wake-ups, librdkafka and the system calls.

Run:
    PYTHONPATH=. python -m bench.rpc_breakdown            # prints JSON, appends to docs
    PYTHONPATH=. python -m bench.rpc_breakdown --no-doc --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from confluent_kafka import Message, Producer

from bench.kit_breakdown import NullSink
from bench.report import emit, in_process_head, machine
from bench.stock import CheckStock, StockLevel
from kit import Codec, load_settings
from kit.dispatch import Dispatcher, Ticket
from kit.protocol import CORRELATION_ID
from kit.requests import request_headers
from kit.transport.memory import MemoryMessage
from kit.transport.requester import Requester

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "bench-rpc"
TARGET = f"{SERVICE}.check"
UNREACHABLE = "127.0.0.1:1"  # clients made but never connected: nothing goes on a wire
QUIET = '{"log_level": 0}'  # and no "connection refused" logged


class Wire:
    """Stands in for the Requester's turn batch: answers each loop turn's requests with one
    batch of replies, handed to the Requester on the next turn (as its reader thread does)."""

    def __init__(self, requester: Requester, reply: bytes) -> None:
        self.requester = requester
        self.reply = reply
        self.queued: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    # Any: the delivery callback's signature, as kit's sinks take it
    def produce(self, _topic: str, _value: bytes, _key: Any, headers: Any, _cb: Any) -> None:
        for name, data in headers:
            if name == CORRELATION_ID:
                self.queued.append(data)
                break
        if len(self.queued) == 1:
            self.loop.call_soon(self.answer)

    def answer(self) -> None:
        batch = [
            MemoryMessage("r", 0, 0, None, self.reply, [(CORRELATION_ID, corr)], 0)
            for corr in self.queued
        ]
        self.queued.clear()
        self.loop.call_soon(self.requester._deliver, batch)  # type: ignore[arg-type]


async def caller(calls: int, depths: tuple[int, ...], runs: int) -> dict[str, float]:
    """µs per call through Requester.call, closed loop, at each number of calls in flight."""
    codec = Codec(CheckStock.__kit_repository__)
    settings = load_settings(bootstrap_servers=UNREACHABLE, kafka_config=QUIET)
    producer = Producer({"bootstrap.servers": UNREACHABLE, "log_level": 0})
    requester = Requester(settings, codec, producer, instance_id="bench-breakdown")
    # Started by hand, with no reply topic and no reader thread: the Wire answers.
    requester._loop = asyncio.get_running_loop()
    requester._thread = object()  # type: ignore[assignment]
    requester._sink.known_topics.add(TARGET)
    requester._requests = Wire(  # type: ignore[assignment]
        requester, codec.encode(StockLevel(sku="tea", available=10, enough=True))
    )
    request = CheckStock(sku="tea", quantity=1)

    async def run(count: int, depth: int) -> float:
        left = iter(range(count))

        async def one_caller() -> None:
            for _ in left:
                await requester.call(TARGET, request, StockLevel, 30)

        started = time.perf_counter()
        await asyncio.gather(*(one_caller() for _ in range(depth)))
        return (time.perf_counter() - started) / count * 1e6

    await run(min(calls, 5000), max(depths))  # warm up
    out = {str(depth): min([await run(calls, depth) for _ in range(runs)]) for depth in depths}
    requester._thread = None  # no reader thread and no reply topic to close
    requester._deadlines.close()  # its loop timer, which close() would end
    return out


def responder(calls: int, runs: int) -> float:
    """µs per request through Dispatcher.handle_partition, batches of 100."""
    os.environ.setdefault("BENCH_RPC_SERVICE", SERVICE)
    from bench.rpc_responder import service

    codec = Codec(CheckStock.__kit_repository__)
    settings = load_settings(bootstrap_servers=UNREACHABLE, kafka_config=QUIET)
    dispatcher = Dispatcher(service, codec, settings, NullSink())
    topic = service.responders()[0].topic
    value = codec.encode(CheckStock(sku="tea", quantity=1))
    deadline = int((time.time() + 3600) * 1000)
    reply_to = b"_kit.replies.bench-breakdown"
    messages = [
        Message(
            topic=topic,
            partition=0,
            offset=i,
            key=None,
            value=value,
            timestamp=(1, 0),
            headers=request_headers(b"c-%d" % i, reply_to, deadline, SERVICE, "check"),
        )
        for i in range(calls)
    ]
    batches = [messages[i : i + 100] for i in range(0, calls, 100)]
    gc.collect()
    gc.freeze()  # keep the prepared requests out of the collections the timed code triggers

    async def run() -> float:
        started = time.perf_counter()
        for batch in batches:
            await dispatcher.handle_partition(batch, Ticket())
        return (time.perf_counter() - started) / calls * 1e6

    async def best() -> float:
        await run()  # warm up
        return min([await run() for _ in range(runs)])

    try:
        return asyncio.run(best())
    finally:
        gc.unfreeze()


def typed_work(number: int) -> dict[str, float]:
    """The Avro and pydantic work of one call, each step alone, µs."""
    codec = Codec(CheckStock.__kit_repository__)
    request = CheckStock(sku="tea", quantity=1)
    reply = StockLevel(sku="tea", available=10, enough=True)
    request_bytes, reply_bytes = codec.encode(request), codec.encode(reply)

    def per_call(fn: Any) -> float:  # Any: any zero-argument callable
        return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

    steps = {
        "caller: encode the request": lambda: codec.encode(request),
        "responder: decode and validate the request": lambda: codec.decode(
            request_bytes, CheckStock
        ),
        "responder: encode the reply": lambda: codec.encode(reply),
        "caller: decode and validate the reply": lambda: codec.decode(reply_bytes, StockLevel),
    }
    out = {name: per_call(fn) for name, fn in steps.items()}
    out["all four"] = sum(out.values())
    return out


async def hand_off(samples: int) -> dict[str, float]:
    """µs from a thread's `call_soon_threadsafe` to the callback running on an idle loop."""
    loop = asyncio.get_running_loop()
    go, stop = threading.Event(), threading.Event()
    seen: list[float] = []
    arrived: asyncio.Future[None] = loop.create_future()

    def arrive(sent: float) -> None:
        seen.append(time.perf_counter() - sent)
        arrived.set_result(None)

    def sender() -> None:  # as the reply reader thread, woken by a fetched batch
        while go.wait() and not stop.is_set():
            go.clear()
            loop.call_soon_threadsafe(arrive, time.perf_counter())

    thread = threading.Thread(target=sender, name="bench-hand-off")
    thread.start()
    try:
        for _ in range(samples):
            arrived = loop.create_future()
            await asyncio.sleep(0.001)  # idle in select, as between calls (a round trip: ~1 ms)
            go.set()
            await asyncio.wait_for(arrived, 5)
    finally:
        stop.set()
        go.set()
        thread.join(5)
    seen.sort()
    return {
        "p50": seen[len(seen) // 2] * 1e6,
        "p90": seen[int(len(seen) * 0.9)] * 1e6,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        *in_process_head("request-reply cost breakdown, in-process, no broker", report),
        "| path | µs per call |",
        "|---|---:|",
    ]
    lines += [f"| caller, {d} in flight | {v:.2f} |" for d, v in report["caller_us"].items()]
    lines.append(f"| responder, batches of 100 | {report['responder_us']:.2f} |")
    lines += [f"| typed work: {k} | {v:.2f} |" for k, v in report["typed_us"].items()]
    lines += [
        f"| hand-off, thread to idle loop, {k} | {v:.1f} |"
        for k, v in report["hand_off_us"].items()
    ]
    return "\n".join([*lines, "", ""])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hand-offs", type=int, default=2000)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks-history.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    report = {
        "command": "python -m bench.rpc_breakdown " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(""),
        "load_before": round(os.getloadavg()[0], 2),
        "caller_us": {
            k: round(v, 2) for k, v in asyncio.run(caller(args.calls, (1, 256), args.runs)).items()
        },
        "responder_us": round(responder(args.calls, args.runs), 2),
        "typed_us": {k: round(v, 2) for k, v in typed_work(min(args.calls, 20_000)).items()},
        "hand_off_us": {k: round(v, 1) for k, v in asyncio.run(hand_off(args.hand_offs)).items()},
    }
    emit(report, markdown(report), None if args.no_doc else args.doc)


if __name__ == "__main__":
    main()
