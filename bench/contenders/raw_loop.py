"""The reference: a hand-written confluent-kafka + fastavro loop, at-least-once like kit.

consume(batch) → check the 10-byte single-object header → schemaless decode → flip `ok`
→ schemaless encode behind the same header → produce (acks=all, idempotent, linger 5 ms)
→ store the batch's offsets once every record it emitted is delivered → auto-commit
(1 s, as kit) and a final synchronous commit. Client settings are the ones kit uses.

With `typed=True` (bench/contenders/raw_typed.py) the same loop also does what typed
events cost: pydantic validation of each decoded record into a plain pydantic model, the
handler's `model_copy(update={"ok": ...})`, and encoding the copy's `__dict__`. No kit.

Run alone (the driver normally does this):
    PYTHONPATH=. python -m bench.contenders.raw_loop --input T --output O --group G --events N
"""

from __future__ import annotations

import time
from collections import deque
from io import BytesIO
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from fastavro import schemaless_reader, schemaless_writer

from bench.common import HEADER, HEADER_SIZE, PARSED, Meter, contender_args, emit


class Batch:
    """One fetched batch: its offsets are stored once all its outputs are delivered."""

    __slots__ = ("count", "error", "offsets", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.count = 0
        self.error: Any = None
        self.offsets: dict[tuple[str, int], int] = {}

    def delivered(self, err: Any, _msg: Any) -> None:
        self.pending -= 1
        if err is not None:
            self.error = err


def reading_model() -> Any:
    """bench.Reading as a plain pydantic model, configured like kit's Event (extra=forbid)."""
    from pydantic import BaseModel, ConfigDict

    class Reading(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: int
        sensor: str
        site: str
        value: float
        unit: str
        taken_at: int
        ok: bool

    return Reading


def main(typed: bool = False) -> None:
    args = contender_args(__doc__ or "")
    validate = reading_model().__pydantic_validator__.validate_python if typed else None
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "socket.nagle.disable": True,
            "message.timeout.ms": 30_000,
            "queue.buffering.max.messages": 200_000,
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": 10,
            "queued.min.messages": 5_000,  # kit's prefetch bounds (kit.transport.kafka.PREFETCH)
            "queued.max.messages.kbytes": 16_384,
            "fetch.queue.backoff.ms": 10,
            "socket.nagle.disable": True,
            "session.timeout.ms": 20_000,  # kit.transport.kafka.SESSION_TIMEOUT_MS
            "heartbeat.interval.ms": 1_000,
        }
    )
    consumer.subscribe([args.input])
    meter = Meter(args.events)
    output, size, events = args.output, args.batch, args.events
    produce, poll, consume = producer.produce, producer.poll, consumer.consume
    pending: deque[Batch] = deque()
    handled = delivered = 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        messages = consume(size, 0 if pending else 0.05)
        if messages:
            meter.start()
            batch = Batch()
            offsets = batch.offsets
            on_delivery = batch.delivered
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                value = msg.value()
                if value[:HEADER_SIZE] != HEADER:
                    raise ValueError(f"unexpected header {value[:HEADER_SIZE].hex()}")
                body = BytesIO(value)
                body.seek(HEADER_SIZE)
                record = schemaless_reader(body, PARSED, None)
                if validate is None:
                    record["ok"] = not record["ok"]
                else:
                    event = validate(record)
                    record = event.model_copy(update={"ok": not event.ok}).__dict__
                out = BytesIO()
                out.write(HEADER)
                schemaless_writer(out, PARSED, record)
                batch.pending += 1
                while True:
                    try:
                        produce(output, out.getvalue(), msg.key(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        poll(0.01)
                offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            batch.count = len(messages)
            handled += batch.count
            pending.append(batch)
        poll(0 if messages else 0.002)
        while pending and pending[0].pending <= 0:
            done = pending.popleft()
            if done.error is not None:
                raise KafkaException(done.error)
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in done.offsets.items()]
            )
            delivered += done.count
        if handled >= events and not pending:
            meter.finish()
            break
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise
    consumer.close()
    producer.flush(10)
    name = "raw confluent-kafka loop" + (" + pydantic" if typed else "")
    emit(meter.result(name, handled, delivered))


if __name__ == "__main__":
    main()
