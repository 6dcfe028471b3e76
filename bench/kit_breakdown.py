"""Where kit's time goes per event, measured in-process without a broker.

Times each stage of the pipeline benchmark's record path on 100-byte `bench.Reading`
records (best of 5 runs, microseconds per event), then the whole of kit's
`Dispatcher.handle_batch` on real `confluent_kafka.Message` objects with a sink that
confirms each record at once, next to the raw loop's body doing the same work.
The gap between the two totals is kit's own per-event cost before any Kafka I/O.

Run:
    PYTHONPATH=. python -m bench.kit_breakdown            # prints JSON, appends to docs
    PYTHONPATH=. python -m bench.kit_breakdown --no-doc --events 50000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import timeit
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bench.common import HEADER, HEADER_SIZE, PARSED, Meter
from bench.contenders.kit_service import make_service
from bench.reading import Reading, records
from bench.report import emit, in_process_head, machine
from kit import Codec, load_settings
from kit.dispatch import Dispatcher, Ticket

ROOT = Path(__file__).resolve().parent.parent


class NullSink:
    """A sink that confirms every record at once (no Kafka)."""

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        on_delivery(None, None)


def per_event(fn: Callable[[], object], number: int) -> float:
    """Best-of-7 microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def messages(topic: str, count: int, batch: int) -> list[list[Message]]:
    """Batches of real Messages, each batch from one partition (as consume() mostly gives)."""
    data = records(count)
    out = [
        Message(topic=topic, partition=n % 6, offset=n, key=k, value=v, timestamp=(1, 0))
        for n, (k, v) in enumerate(data)
    ]
    out.sort(key=lambda m: m.partition())
    gc.collect()
    gc.freeze()  # keep the prepared records out of the collections the timed code triggers
    return [out[i : i + batch] for i in range(0, len(out), batch)]


def stages(number: int) -> dict[str, float]:
    """Each step alone, µs per event."""
    codec = Codec(Reading.__kit_repository__)
    schema = Reading.kit_schema()
    value = records(1)[0][1]
    event = codec.decode(value, Reading)
    record = event.model_dump()
    unhinted = parse_schema(json.loads(schema.text), _write_hint=False)

    def fa_decode(parsed: dict[str, Any]) -> Callable[[], object]:
        def run() -> object:
            body = BytesIO(value)
            body.seek(HEADER_SIZE)
            return schemaless_reader(body, parsed, None)

        return run

    def fa_encode(parsed: dict[str, Any]) -> Callable[[], object]:
        def run() -> object:
            out = BytesIO()
            out.write(HEADER)
            schemaless_writer(out, parsed, record)
            return out.getvalue()

        return run

    validate = Reading.__pydantic_validator__.validate_python
    for warm_up in (fa_decode(schema.parsed), fa_encode(schema.parsed)):
        per_event(warm_up, number)  # the first timings of a process run slow; discard them
    return {
        "fastavro decode with kit's Schema.parsed": per_event(fa_decode(schema.parsed), number),
        "fastavro decode, schema parsed with _write_hint=False": per_event(
            fa_decode(unhinted), number
        ),
        "fastavro encode with kit's Schema.parsed": per_event(fa_encode(schema.parsed), number),
        "fastavro encode, schema parsed with _write_hint=False": per_event(
            fa_encode(unhinted), number
        ),
        "kit Codec.decode_dict (header, fingerprint, fastavro)": per_event(
            lambda: codec.decode_dict(value, schema), number
        ),
        "pydantic validation of the decoded dict (core validator)": per_event(
            lambda: validate(record), number
        ),
        "kit Codec.decode (decode_dict + validation)": per_event(
            lambda: codec.decode(value, Reading), number
        ),
        "handler body: event.model_copy(update={'ok': ...})": per_event(
            lambda: event.model_copy(update={"ok": not event.ok}), number
        ),
        "pydantic model_dump()": per_event(event.model_dump, number),
        "kit Codec.encode": per_event(lambda: codec.encode(event), number),
    }


def kit_total(batches: list[list[Message]], topic: str) -> float:
    """µs per event through Dispatcher.handle_batch (decode → handler → encode → sink)."""
    settings = load_settings(bootstrap_servers="unused:9092")
    service = make_service(topic, "out", "g", Meter(0))
    dispatcher = Dispatcher(service, Codec(Reading.__kit_repository__), settings, NullSink())

    async def run() -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for batch in batches:
                await dispatcher.handle_batch(batch, Ticket())
            best = min(best, time.perf_counter() - started)
        return best

    count = sum(len(b) for b in batches)
    return asyncio.run(run()) / count * 1e6


def raw_total(batches: list[list[Message]]) -> float:
    """µs per event through the raw loop's body (header check → decode → encode → sink)."""
    sink = NullSink()

    def run() -> None:
        for batch in batches:
            offsets: dict[tuple[str, int], int] = {}
            for msg in batch:
                value = msg.value()
                if value[:HEADER_SIZE] != HEADER:
                    raise ValueError("bad header")
                body = BytesIO(value)
                body.seek(HEADER_SIZE)
                record = schemaless_reader(body, PARSED, None)
                record["ok"] = not record["ok"]
                out = BytesIO()
                out.write(HEADER)
                schemaless_writer(out, PARSED, record)
                sink.produce("out", out.getvalue(), msg.key(), None, _ignore)
                offsets[(msg.topic(), msg.partition())] = msg.offset() + 1

    count = sum(len(b) for b in batches)
    return min(timeit.repeat(run, number=1, repeat=5)) / count * 1e6


def _ignore(_err: Any, _msg: Any) -> None:
    pass


def markdown(report: dict[str, Any]) -> str:
    lines = [
        *in_process_head("kit per-event cost breakdown, in-process, no broker", report),
        "| stage | µs per event |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["stages"].items()]
    lines += [
        f"| **kit Dispatcher.handle_batch, whole record path** | **{report['kit_total']:.2f}** |",
        f"| **raw loop body, same work** | **{report['raw_total']:.2f}** |",
        "",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks-history.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    import sys

    batches = messages("in", args.events, 500)
    report = {
        "command": "python -m bench.kit_breakdown " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(""),
        "stages": {k: round(v, 2) for k, v in stages(args.events).items()},
        "kit_total": round(kit_total(batches, "in"), 2),
        "raw_total": round(raw_total(batches), 2),
    }
    emit(report, markdown(report), None if args.no_doc else args.doc)


if __name__ == "__main__":
    main()
