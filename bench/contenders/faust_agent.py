"""Faust (faust-streaming): one agent over the input topic with raw (bytes) keys and values.

- The agent iterates `stream.items()`, decodes with fastavro, flips `ok`, encodes, and
  `await output.send(key=..., value=...)`; the returned future resolves when the broker
  confirms the record, and the run ends when all N are confirmed.
- At-least-once is Faust's own: an event is acked when the agent takes the next one, and
  acked offsets are committed every `broker_commit_every` events / `broker_commit_interval`.
- `stream.take()` is not used: Faust documents it for buffering values into lists, not as
  a faster path, and the per-event `send` is the same either way.
- Faust runs on aiokafka (`kafka://`); its producer exposes acks and linger but not
  idempotence outside exactly-once mode: acks=all, linger 5 ms, no idempotence.
- App started programmatically (`await app.start()` ... `await app.stop()`), memory store,
  web server off.

Run alone (the driver normally does this):
    PYTHONPATH=. python -m bench.contenders.faust_agent --input T --output O --group G --events N
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import faust

from bench.common import Meter, contender_args, emit, transform


async def run(args: argparse.Namespace) -> dict[str, object]:
    meter = Meter(args.events)
    counts = {"handled": 0, "delivered": 0}
    done = asyncio.Event()
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=6,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
    )
    source = app.topic(args.input, key_type=bytes, value_type=bytes, value_serializer="raw")
    output = app.topic(args.output, key_type=bytes, value_type=bytes, value_serializer="raw")

    def delivered(_future: Any) -> None:
        counts["delivered"] += 1
        if counts["delivered"] >= args.events:
            meter.finish()
            done.set()

    @app.agent(source)
    async def readings(stream: Any) -> None:
        async for key, value in stream.items():
            meter.start()
            future = await output.send(key=key, value=transform(value))
            future.add_done_callback(delivered)
            counts["handled"] += 1

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), args.timeout)
    except TimeoutError:
        pass
    finally:
        await app.stop()
    return meter.result("Faust (faust-streaming)", counts["handled"], counts["delivered"])


def main() -> None:
    args = contender_args(__doc__ or "")
    logging.basicConfig(level=logging.WARNING)
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
