"""FastStream on aiokafka (`faststream.kafka.KafkaBroker`), in its documented fast path.

- Batch subscriber (`batch=True`, `max_records`): one handler call per fetched batch.
- At-least-once: `AckPolicy.ACK` commits after the handler returns; the handler returns
  only after `broker.publish_batch(...)` is confirmed by the broker.
- aiokafka's batch send writes one batch to one partition, so outputs are grouped by
  their input partition (same key → same input partition → same output partition, 6 and
  6) and the per-partition batches are published concurrently.
- fastavro decodes and encodes in the handler (FastStream has no Avro support).
- Producer: acks=all, idempotence, linger 5 ms (as kit), max_batch_size 1 MiB so a
  fetched batch fits one producer batch; consumer fetch_max_wait_ms 10.

Run alone (the driver normally does this):
    PYTHONPATH=. python -m bench.contenders.faststream_aiokafka --input T --output O \
        --group G --events N
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaPublishMessage
from faststream.kafka.annotations import KafkaMessage

from bench.common import Meter, contender_args, emit, transform


async def run(args: argparse.Namespace) -> dict[str, object]:
    meter = Meter(args.events)
    handled = 0
    broker = KafkaBroker(
        args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1024 * 1024,
        logger=logging.getLogger("bench.faststream"),
    )

    @broker.subscriber(
        args.input,
        group_id=args.group,
        auto_offset_reset="earliest",
        batch=True,
        max_records=args.batch,
        fetch_max_wait_ms=10,
        ack_policy=AckPolicy.ACK,
    )
    async def on_batch(msg: KafkaMessage) -> None:
        nonlocal handled
        meter.start()
        by_partition: dict[int, list[KafkaPublishMessage]] = {}
        for record in msg.raw_message:
            out = KafkaPublishMessage(transform(record.value), key=record.key)
            by_partition.setdefault(record.partition, []).append(out)
        await asyncio.gather(
            *(
                broker.publish_batch(*batch, topic=args.output, partition=partition)
                for partition, batch in by_partition.items()
            )
        )
        handled += len(msg.raw_message)

    logging.getLogger("bench.faststream").setLevel(logging.WARNING)
    await broker.start()
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            if handled >= args.events:
                meter.finish()
                break
            await asyncio.sleep(0.01 if handled < args.events * 0.99 else 0.001)
    finally:
        await broker.stop()
    return meter.result("FastStream (aiokafka)", handled, handled)


def main() -> None:
    emit(asyncio.run(run(contender_args(__doc__ or ""))))


if __name__ == "__main__":
    main()
