"""Faust's side of bench/rpc.py: an agent that yields a reply, and a caller worker that asks it.

Both sides are Faust workers, `python -m bench.faust_rpc worker -l info --without-web` (the
worker CLI overrides `web_enabled=False`); BENCH_FAUST_ROLE picks the app:

- `server` (default): the agent `check` consumes BENCH_FAUST_TOPIC and yields one reply per
  request (Faust sends it to the request's reply-to topic).
- `caller`: no agent runs here; an `@app.task` waits for the reply topic to be assigned, runs
  `bench.rpc.measure()` over `await check.ask(value=...)` (each bounded by `asyncio.wait_for`:
  Faust's ask() has no timeout), prints one line `BENCH_FAUST_RESULT {json}` (or
  `BENCH_FAUST_ERROR ...`) on stdout and stops its own worker.

Environment: BENCH_FAUST_TOPIC (created by the caller of this module: the broker does not
auto-create topics), BENCH_FAUST_BROKER (kafka://host:port), BENCH_FAUST_REPLY_TO (the caller's
reply topic, declared by Faust itself), BENCH_FAUST_LATENCY / _REQUESTS / _WARMUP (the
caller's workload, as bench.rpc's --latency/--requests/--warmup).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import faust

ROLE = os.environ.get("BENCH_FAUST_ROLE", "server")
TOPIC = os.environ.get("BENCH_FAUST_TOPIC", "bench-faust-rpc")
BROKER = os.environ.get("BENCH_FAUST_BROKER", "kafka://127.0.0.1:9092")
REPLY_TO = os.environ.get("BENCH_FAUST_REPLY_TO", f"bench-faust-reply-{TOPIC}")
LATENCY = int(os.environ.get("BENCH_FAUST_LATENCY", "2000"))
REQUESTS = int(os.environ.get("BENCH_FAUST_REQUESTS", "20000"))
WARMUP = int(os.environ.get("BENCH_FAUST_WARMUP", "200"))
ASK_TIMEOUT = 30.0  # seconds, per ask() (kit's side uses timeout=30 too)
ASSIGN_TIMEOUT = 60.0  # seconds for the caller's reply topic to be assigned
RESULT = "BENCH_FAUST_RESULT "
ERROR = "BENCH_FAUST_ERROR "

# LEADER: both apps set `topic_disable_leader=True`, as Faust's settings reference advises for
# apps that use no `on_leader=True` task or timer. Otherwise each worker also consumes its idle
# `<id>-__assignor-__leader` partition, and Faust's consumer waits up to 1.5 s per fetch
# (`fetch_max_wait_ms=1500`, fixed in its aiokafka driver): whenever the busy partitions still
# hold undelivered records, aiokafka's next fetch covers only that idle partition, and new
# requests/replies wait for it to time out. With 256 in flight that stalled both workers for
# ~1.4 s every ~1.7 s (seen as ~150-250 req/s instead of ~700-1000).

# Payloads match kit's bench.CheckStock → bench.StockLevel field for field; they travel
# as JSON (Faust's default codec for Records), where kit uses Avro plus validation.


class Check(faust.Record, serializer="json"):
    """The request: kit's CheckStock."""

    sku: str
    quantity: int


class Level(faust.Record, serializer="json"):
    """The reply: kit's StockLevel."""

    sku: str
    available: int
    enough: bool


def _agent(app: faust.App) -> Any:
    topic = app.topic(TOPIC, value_type=Check, partitions=4)

    async def check(stream: AsyncIterator[Check]) -> AsyncIterator[Level]:
        async for req in stream:
            yield Level(sku=req.sku, available=10, enough=req.quantity <= 10)

    return app.agent(topic, name="check")(check)


def server_app() -> faust.App:
    """The worker that runs the agent."""
    server = faust.App(
        f"bench-rpc-server-{TOPIC}",
        broker=BROKER,
        store="memory://",
        web_enabled=False,
        topic_partitions=4,
        producer_linger_ms=0,
        topic_disable_leader=True,  # see LEADER above
    )
    _agent(server)
    return server


def caller_app() -> faust.App:
    """The worker that asks: it holds the agent's handle but does not run the agent."""
    caller = faust.App(
        f"bench-rpc-caller-{TOPIC}",
        broker=BROKER,
        store="memory://",
        web_enabled=False,
        topic_partitions=4,
        producer_linger_ms=0,
        topic_disable_leader=True,  # see LEADER above
        # the broker does not auto-create topics: Faust declares its reply topic at start
        reply_to=REPLY_TO,
        reply_create_topic=True,
    )
    handle = _agent(caller)
    # the caller only asks: drop the agent from the app so its actor never runs here
    del caller.agents[handle.name]

    @caller.task
    async def run() -> None:
        try:
            result = await _measure(caller, handle)
            line = RESULT + json.dumps(result)
        except Exception as exc:  # report it, e.g. a timed-out ask()
            line = f"{ERROR}{type(exc).__name__}: {exc}"
        # the real stdout: a Faust worker redirects sys.stdout into its logger
        print(line, file=sys.__stdout__, flush=True)
        # stop this worker the way a signal would (graceful; bench.rpc kills it if it lingers)
        os.kill(os.getpid(), signal.SIGTERM)

    return caller


async def _ack_unread_replies(caller: faust.App) -> None:
    """Work around faust-streaming 0.15.3: ack the reply copies that nothing reads.

    Its ReplyConsumer registers the reply Topic with the conductor (`app.topics.add(topic)` in
    `_start_fetcher`) and then iterates a clone of it, so every reply is decoded into two
    channels and only the clone's stream reads and acks. The other channel's buffer fills: at
    `stream_buffer_maxsize / 1.25` (3276 replies by default) a worker's consumer stops
    fetching the reply partition and every later ask() waits forever; once it is full the
    conductor logs "Cannot put on Topic channel before aiter(f-reply-...)" (a client-only app
    hits that too); and the never-acked replies make shutdown wait forever (wait_empty).
    Reading and acking that channel here, as a stream would, leaves Faust's ask() path as it
    is (the extra decode per reply stays in the figures) without those failures.
    """
    unread = [t for t in caller.topics if REPLY_TO in t.topics and not t.is_iterator]
    if not unread:  # a Faust without that registration: nothing to do
        return
    queue = unread[0].queue
    while True:
        event = await queue.get()
        event.ack()


async def _measure(caller: faust.App, agent: Any) -> dict[str, Any]:
    from bench.rpc import measure

    deadline = time.monotonic() + ASSIGN_TIMEOUT
    while not any(tp.topic == REPLY_TO for tp in caller.consumer.assignment()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"reply topic {REPLY_TO} not assigned in {ASSIGN_TIMEOUT}s")
        await asyncio.sleep(0.1)
    acker = asyncio.create_task(_ack_unread_replies(caller))
    try:
        request = Check(sku="tea", quantity=1)

        async def call(_i: int) -> Any:
            try:
                return await asyncio.wait_for(agent.ask(value=request), ASK_TIMEOUT)
            except TimeoutError:
                raise TimeoutError(f"ask() got no reply in {ASK_TIMEOUT:.0f}s") from None

        reply = await call(-1)
        if not (isinstance(reply, Level) and reply.sku == "tea" and reply.enough):
            raise RuntimeError(f"unexpected reply {reply!r}")

        return await measure(call, LATENCY, REQUESTS, WARMUP)
    finally:
        acker.cancel()


app = caller_app() if ROLE == "caller" else server_app()

if __name__ == "__main__":
    app.main()
