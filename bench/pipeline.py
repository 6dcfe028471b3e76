"""Pipeline benchmark: consume → decode → handler → encode → produce → commit, kit vs the rest.

For each contender (kit; the reference hand-written confluent-kafka + fastavro loop, alone
and doing kit's pydantic work too; FastStream on confluent-kafka and on aiokafka; Faust),
in the same run, interleaved round by round, against the same broker:
  1. create a fresh input topic (6 partitions) and output topic, pre-fill the input with
     N `bench.Reading` events (~100 bytes, Avro single-object encoding from kit's Codec);
  2. run the contender in its own process with a fresh consumer group; it times from its
     first consumed record to its last output confirmed by the broker, and reports CPU
     seconds and peak RSS;
  3. check the output topic holds N records, the group committed N offsets, and a sample
     of outputs decodes with the right key and `ok` flipped.
Prints the results as JSON and appends a Markdown table (median round per contender,
ratios, kit's targets) to docs/benchmarks-history.md.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.pipeline                      # N=200,000, every contender
    PYTHONPATH=. python -m bench.pipeline --events 100000 --repeat 3 --only kit,raw
    PYTHONPATH=. python -m bench.pipeline --events 100000 --repeat 3 --only kit,kit-eos,raw
    PYTHONPATH=. python -m bench.pipeline --only kit --no-doc --profile-kit /tmp/kit.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import HEADER
from bench.reading import Reading, reading, records
from bench.report import append_markdown, machine
from kit import Codec

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = {
    "kit": "bench.contenders.kit_service",
    "kit-eos": "bench.contenders.kit_service",
    "raw": "bench.contenders.raw_loop",
    "raw-pydantic": "bench.contenders.raw_typed",
    "faststream-confluent": "bench.contenders.faststream_confluent",
    "faststream-aiokafka": "bench.contenders.faststream_aiokafka",
    "faust": "bench.contenders.faust_agent",
}
PARTITIONS = 6
CONTENDER_ENV = {"kit-eos": {"KIT_EXACTLY_ONCE": "true"}}
"""kit-eos is the kit contender with exactly-once processing (one transaction per batch)."""


def create_topics(admin: AdminClient, names: list[str]) -> None:
    """Create topics with 6 partitions and wait until every partition has a leader."""
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(
            n in topics
            and len(topics[n].partitions) == PARTITIONS
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics not ready: {names}")


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    """Delete those of `names` that exist (a contender may create some) and wait."""
    existing = admin.list_topics(timeout=10).topics
    names = [n for n in names if n in existing]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)


def prefill(bootstrap: str, topic: str, data: list[tuple[bytes, bytes]]) -> None:
    """Write every (key, value) to `topic` and wait until all are acknowledged."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for key, value in data:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"pre-filling {topic} did not finish")


def verify(bootstrap: str, group: str, source: str, output: str) -> tuple[int, int, str]:
    """(records in `output`, offsets of `source` committed by `group`, sample check)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        count = 0
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(output, p), timeout=10)
            count += high - low
        committed = consumer.committed(
            [TopicPartition(source, p) for p in range(PARTITIONS)], timeout=10
        )
        return count, sum(max(tp.offset, 0) for tp in committed), sample_check(consumer, output)
    finally:
        consumer.close()


def sample_check(consumer: Consumer, output: str, count: int = 200) -> str:
    """Decode some outputs: single-object Readings, keyed by probe, with `ok` flipped."""
    codec = Codec(Reading.__kit_repository__)
    consumer.assign([TopicPartition(output, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen, deadline = 0, time.monotonic() + 10
    while seen < count and time.monotonic() < deadline:
        for msg in consumer.consume(count, 0.5):
            if msg.error() is not None:
                continue
            event = codec.decode(msg.value(), Reading)
            if msg.key() != f"probe-{event.id % 1000:04d}".encode():
                return f"bad key {msg.key()!r} for id {event.id}"
            if event.ok != (not reading(event.id).ok):
                return f"ok not flipped for id {event.id}"
            seen += 1
    return f"{seen} sampled ok" if seen else "no output to sample"


def launch(
    name: str, command: list[str], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one contender process and parse its RESULT line (or say why there is none)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KIT_SCHEMAS_DIR": str(ROOT / "schemas"),
        **(env or {}),
    }
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"contender": name, "complete": False, "events_per_s": 0, "error": "timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
        return result
    why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no output"])[-1]
    return {"contender": name, "complete": False, "events_per_s": 0, "error": why[:300]}


def run_contender(
    name: str,
    args: argparse.Namespace,
    data: list[tuple[bytes, bytes]],
    tag: str,
    *,
    module: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Prepare topics, run one contender in a subprocess, check what it left behind."""
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    source, output, group = f"{tag}-{name}-in", f"{tag}-{name}-out", f"{tag}-{name}-g"
    create_topics(admin, [source, output])
    try:
        prefill(args.bootstrap, source, data)
        command = [sys.executable, "-m", module or CONTENDERS[name], "--bootstrap", args.bootstrap]
        command += ["--input", source, "--output", output, "--group", group]
        command += ["--events", str(len(data)), "--batch", str(args.batch)]
        command += ["--timeout", str(args.timeout)]
        if name == "kit" and getattr(args, "profile_kit", ""):
            command += ["--profile", args.profile_kit]
        load = os.getloadavg()[0]
        started = time.monotonic()
        result = launch(
            name, command, args.timeout + 90, {**CONTENDER_ENV.get(name, {}), **(env or {})}
        )
        result["name"] = name
        result["load_before"] = round(load, 2)
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["output_records"], result["committed"], result["sample"] = verify(
            args.bootstrap, group, source, output
        )
        return result
    finally:
        delete_topics(admin, [source, output, f"{source}.dlt", f"{group}-__assignor-__leader"])


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """One row per contender: the run with the median events/s."""
    rows = []
    for name in names:
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["events_per_s"])
        if mine:
            row = dict(mine[(len(mine) - 1) // 2])
            row["all_events_per_s"] = [r["events_per_s"] for r in runs if r["name"] == name]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per contender")
    parser.add_argument("--batch", type=int, default=500, help="records per fetch (all)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--timeout", type=float, default=600.0, help="per contender (s)")
    parser.add_argument("--profile-kit", default="", help="profile kit into this file")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks-history.md"))
    parser.add_argument("--no-doc", action="store_true", help="do not append to --doc")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {list(CONTENDERS)}")
    if not args.bootstrap:
        from kit.broker.local import running_address

        args.bootstrap = running_address() or "127.0.0.1:9092"
    assert Reading.__kit_header__ == HEADER, "kit and fastavro disagree on the fingerprint"
    data = records(args.events)
    tag = f"bench-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    runs: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        for name in names:
            result = run_contender(name, args, data, f"{tag}-r{round_}")
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    report = {
        "command": "python -m bench.pipeline " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.bootstrap),
        "events": args.events,
        "value_bytes": round(statistics.mean(len(v) for _k, v in data), 1),
        "batch": args.batch,
        "repeat": args.repeat,
        "results": summarize(runs, names),
    }
    print(json.dumps(report, indent=2))
    if not args.no_doc:
        append_markdown(Path(args.doc), report)


if __name__ == "__main__":
    main()
