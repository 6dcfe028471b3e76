"""The request-reply ceiling: a hand-written confluent-kafka request-reply loop, no kit.

The caller (this process, one thread, no asyncio) sends requests carrying a correlation id
and a reply-topic header (kit's header names) to a 4-partition request topic, keeps N of
them in flight (closed loop: each reply sends the next request), and reads replies from its
own 1-partition reply topic (assigned, no group). The responder (a second process, in a
consumer group, kit's consumer settings) wakes on the first fetched request, takes what
else is fetched, and produces each reply to the topic its header names. Both producers
are idempotent, acks=all, linger.ms 0, Nagle off.

Variants: `bare` echoes the request's bytes; `typed` does what kit does per call, without
kit: the caller encodes bench.CheckStock (fastavro schemaless behind the 10-byte
single-object header) and decodes + validates (pydantic) bench.StockLevel; the responder
decodes + validates the request, builds the reply model and encodes it.

Run (broker: `python -m kit.cli broker start`, or KIT_BOOTSTRAP_SERVERS):
    PYTHONPATH=. python -m bench.rpc_ceiling --variant bare,typed --requests 20000
Prints JSON (the same keys as bench.rpc's kit figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.common import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas" / "bench"
CORR, REPLY_TO = "kit-correlation-id", "kit-reply-to"  # kit's header names
HEADER_SIZE = 10

PRODUCER = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 0,
    "socket.nagle.disable": True,
    "message.timeout.ms": 30_000,
    "queue.buffering.max.messages": 200_000,
}


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Typed:
    """fastavro + pydantic for bench.CheckStock / bench.StockLevel, framed as kit frames."""

    def __init__(self) -> None:
        from fastavro import schemaless_reader, schemaless_writer
        from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
        from pydantic import BaseModel, ConfigDict

        def load(name: str) -> tuple[dict[str, Any], bytes]:
            definition = json.loads((SCHEMAS / f"{name}.avsc").read_text())
            canonical = to_parsing_canonical_form(parse_schema(definition, _write_hint=False))
            magic = b"\xc3\x01" + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
            return parse_schema(definition), magic

        class CheckStock(BaseModel):
            model_config = ConfigDict(extra="forbid")
            sku: str
            quantity: int
            request_id: str | None = None

        class StockLevel(BaseModel):
            model_config = ConfigDict(extra="forbid")
            sku: str
            available: int
            enough: bool
            request_id: str | None = None
            served_by: str | None = None

        self.request_schema, self.request_magic = load("CheckStock")
        self.reply_schema, self.reply_magic = load("StockLevel")
        self.CheckStock, self.StockLevel = CheckStock, StockLevel
        self._read, self._write = schemaless_reader, schemaless_writer

    def encode(self, model: Any, schema: dict[str, Any], magic: bytes) -> bytes:
        """Single-object encoding of a model's fields."""
        out = BytesIO()
        out.write(magic)
        self._write(out, schema, model.__dict__)
        return out.getvalue()

    def decode(self, value: bytes, schema: dict[str, Any], magic: bytes, model: Any) -> Any:
        """Check the header, decode, validate into `model`."""
        if value[:HEADER_SIZE] != magic:
            raise ValueError(f"unexpected header {value[:HEADER_SIZE].hex()}")
        body = BytesIO(value)
        body.seek(HEADER_SIZE)
        return model.__pydantic_validator__.validate_python(self._read(body, schema, None))

    def answer(self, value: bytes) -> bytes:
        """The responder's work: decode the request, build the reply, encode it."""
        request = self.decode(value, self.request_schema, self.request_magic, self.CheckStock)
        reply = self.StockLevel(sku=request.sku, available=10, enough=request.quantity <= 10)
        return self.encode(reply, self.reply_schema, self.reply_magic)


# --- the responder process ------------------------------------------------------------


def respond(bootstrap: str, topic: str, group: str, typed: bool) -> None:
    """Answer requests until stdin closes (or the parent dies)."""
    codec = Typed() if typed else None
    answer = codec.answer if codec is not None else None
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": 10,
            "socket.nagle.disable": True,
            "session.timeout.ms": 20_000,  # kit.transport.kafka.SESSION_TIMEOUT_MS
            "heartbeat.interval.ms": 1_000,
        }
    )
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    consumer.subscribe(
        [topic], on_assign=lambda _c, parts: print(f"READY {len(parts)}", flush=True)
    )
    errors = [0]

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors[0] += 1

    poll, consume, produce, pollp = consumer.poll, consumer.consume, producer.produce, producer.poll
    while not stop.is_set():
        first = poll(0.05)
        if first is None:
            pollp(0)
            continue
        for msg in [first, *consume(499, 0)]:
            if msg.error() is not None:
                continue
            reply_to = corr = None
            for key, val in msg.headers() or ():
                if key == CORR:
                    corr = val
                elif key == REPLY_TO:
                    reply_to = val
            if reply_to is None or corr is None:
                continue
            value = msg.value() if answer is None else answer(msg.value())
            produce(reply_to.decode(), value, headers=[(CORR, corr)], on_delivery=delivered)
        pollp(0)
    producer.flush(10)
    consumer.close()
    print(f"DONE errors={errors[0]}", flush=True)


# --- the caller (this process) --------------------------------------------------------


class Caller:
    """Closed-loop requests over one producer and one reply consumer, on one thread."""

    def __init__(self, bootstrap: str, topic: str, reply_topic: str, typed: bool) -> None:
        self.topic, self.reply_topic = topic, reply_topic
        self.reply_to = reply_topic.encode()
        self.codec = Typed() if typed else None
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"ceiling-replies-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "socket.nagle.disable": True,
            }
        )
        self.consumer.assign([TopicPartition(reply_topic, 0, OFFSET_BEGINNING)])
        self.request = None if self.codec is None else self.codec.CheckStock(sku="tea", quantity=1)
        self.ids = 0
        self.errors = 0
        self.pending: dict[bytes, float] = {}

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors += 1

    def send(self) -> None:
        """Encode (typed) and produce one request."""
        self.ids += 1
        corr = b"%d" % self.ids
        codec = self.codec
        if codec is None:
            value = b"x" * 24
        else:  # encoded on every call, as kit's benchmark encodes its one request
            value = codec.encode(self.request, codec.request_schema, codec.request_magic)
        self.pending[corr] = time.perf_counter()
        self.producer.produce(
            self.topic,
            value,
            headers=[(CORR, corr), (REPLY_TO, self.reply_to)],
            on_delivery=self._delivered,
        )

    def run(self, calls: int, depth: int, timeout: float = 60.0) -> list[float]:
        """`calls` requests with `depth` in flight; the latency of each, in ms."""
        latencies: list[float] = []
        sent = 0
        while sent < min(depth, calls):
            self.send()
            sent += 1
        codec, pending = self.codec, self.pending
        poll, consume, pollp = self.consumer.poll, self.consumer.consume, self.producer.poll
        clock = time.perf_counter
        idle_until = time.monotonic() + timeout
        while len(latencies) < calls:
            first = poll(0.1)
            if first is None:
                pollp(0)
                if time.monotonic() > idle_until:
                    raise TimeoutError(f"{calls - len(latencies)} replies missing")
                continue
            idle_until = time.monotonic() + timeout
            for msg in [first, *consume(499, 0)]:
                if msg.error() is not None:
                    continue
                corr = next((v for k, v in msg.headers() or () if k == CORR), None)
                began = pending.pop(corr, None) if corr is not None else None
                if began is None:
                    continue
                if codec is not None:
                    codec.decode(
                        msg.value(), codec.reply_schema, codec.reply_magic, codec.StockLevel
                    )
                latencies.append((clock() - began) * 1000)
                if sent < calls:
                    self.send()
                    sent += 1
            pollp(0)
        return latencies

    def close(self) -> None:
        """Flush and close."""
        self.producer.flush(10)
        self.consumer.close()


class CpuMeter:
    """CPU per call of this process (the caller) and of the responder's, over a phase."""

    def __init__(self, responder_pid: int | None) -> None:
        self.pid = responder_pid
        self.began: tuple[float, float | None] = (0.0, None)

    def start(self) -> None:
        self.began = (time.process_time(), self._responder())

    def per_call(self, calls: int) -> dict[str, float]:
        """µs of CPU per call since start(): the caller's, and the responder's where its
        process could be read."""
        caller, responder = time.process_time(), self._responder()
        out = {"caller": round((caller - self.began[0]) / calls * 1e6, 1)}
        began = self.began[1]
        if responder is not None and began is not None:
            out["responder"] = round((responder - began) / calls * 1e6, 1)
        return out

    def _responder(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid is not None else None


def measure(
    caller: Caller, latency_n: int, requests: int, warmup: int, responder_pid: int | None = None
) -> dict[str, Any]:
    """As bench.rpc.measure: sequential latency, then throughput at 64 and 256 in flight
    (with the CPU per call of both processes at 256)."""
    caller.run(warmup, 1)
    lat = caller.run(latency_n, 1)
    out: dict[str, Any] = {
        "p50_ms": round(percentile(lat, 50), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(max(lat), 3),
        "mean_ms": round(sum(lat) / len(lat), 3),
        "latency_samples": latency_n,
    }
    cpu = CpuMeter(responder_pid)
    for depth in (64, 256):
        cpu.start()
        t = time.perf_counter()
        lat = caller.run(requests, depth)
        out[f"rps_{depth}"] = round(requests / (time.perf_counter() - t))
        out[f"cpu_us_{depth}"] = cpu.per_call(requests)
        out[f"p50_{depth}_ms"] = round(percentile(lat, 50), 3)
        out[f"p99_{depth}_ms"] = round(percentile(lat, 99), 3)
    out["throughput_requests"] = requests
    out["delivery_errors"] = caller.errors
    return out


def run_variant(bootstrap: str, typed: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Create the request topic, start the responder process, measure, clean up."""
    topic = f"bench-ceiling-{uuid.uuid4().hex[:6]}"
    with created(bootstrap, {topic: 4}), responder_process(bootstrap, topic, typed) as pid:
        return call_topic(bootstrap, topic, typed, args, pid)


@contextlib.contextmanager
def created(bootstrap: str, topics: dict[str, int]) -> Iterator[None]:
    """Topics (name: partitions) that exist for the block, deleted after it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()]).values():
        future.result(30)
    try:
        yield
    finally:
        for future in admin.delete_topics(list(topics), operation_timeout=10).values():
            try:
                future.result(15)
            except Exception:  # best effort
                pass


@contextlib.contextmanager
def responder_process(bootstrap: str, topic: str, typed: bool) -> Iterator[int]:
    """The hand-written responder on `topic`, in a process of its own, for the block;
    yields its pid."""
    cmd = [sys.executable, "-m", "bench.rpc_ceiling", "--role", "responder"]
    cmd += ["--bootstrap", bootstrap, "--topic", topic, "--variant", "typed" if typed else "bare"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = "nothing within 60 s"
        if not line.startswith("READY"):
            raise RuntimeError(f"responder did not start: {line!r}")
        yield proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call_topic(
    bootstrap: str, topic: str, typed: bool, args: argparse.Namespace, responder_pid: int
) -> dict[str, Any]:
    """Measure the hand-written caller against whatever answers on `topic` (the process
    `responder_pid`; replies come to a reply topic of the caller's own, made for the run)."""
    reply_topic = f"bench-ceiling-replies-{uuid.uuid4().hex[:6]}"
    with created(bootstrap, {reply_topic: 1}):
        caller = Caller(bootstrap, topic, reply_topic, typed)
        try:
            return measure(caller, args.latency, args.requests, args.warmup, responder_pid)
        finally:
            caller.close()


def _pump(proc: subprocess.Popen[str], lines: queue.SimpleQueue[str]) -> None:
    """Read the responder's output for its whole life (so it never blocks on the pipe)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put("exited")


def main() -> int:
    """Run the variants asked for; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="caller", choices=("caller", "responder"))
    parser.add_argument("--variant", default="bare,typed", help="bare, typed or both")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--topic", default="")
    parser.add_argument("--latency", type=int, default=2000, help="sequential calls")
    parser.add_argument("--requests", type=int, default=20000, help="calls per depth")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    bootstrap = args.bootstrap
    if not bootstrap:
        from kit.broker.local import ensure_running

        bootstrap = ensure_running().bootstrap_servers
    if args.role == "responder":
        respond(bootstrap, args.topic, f"ceiling-{uuid.uuid4().hex[:6]}", args.variant == "typed")
        return 0
    results = {
        f"ceiling-{v}": run_variant(bootstrap, v == "typed", args) for v in args.variant.split(",")
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
