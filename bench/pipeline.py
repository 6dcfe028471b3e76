"""Pipeline benchmark: consume → decode → handler → encode → produce → commit, kit vs the rest.

For each contender (kit, a hand-written confluent-kafka loop, FastStream on confluent-kafka,
FastStream on aiokafka, Faust), in the same run and against the same broker:
  1. create a fresh input topic (6 partitions) and output topic, pre-fill the input with
     N `bench.Reading` events (~100 bytes, Avro single-object encoding from kit's Codec);
  2. run the contender in its own process with a fresh consumer group; it times from its
     first consumed record to its last output confirmed by the broker, and reports CPU
     seconds and peak RSS;
  3. check the output topic holds N records and the group committed N offsets.
Prints the results as JSON and appends a Markdown table to docs/benchmarks.md.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.pipeline                      # N=200,000, every contender
    PYTHONPATH=. python -m bench.pipeline --events 100000 --repeat 3 --only kit,raw
    PYTHONPATH=. python -m bench.pipeline --profile-kit /tmp/kit.txt   # pyinstrument on kit
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

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import HEADER
from bench.report import append_markdown, machine
from bench.reading import Reading, records

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = {
    "kit": "bench.contenders.kit_service",
    "raw": "bench.contenders.raw_loop",
    "faststream-confluent": "bench.contenders.faststream_confluent",
    "faststream-aiokafka": "bench.contenders.faststream_aiokafka",
    "faust": "bench.contenders.faust_agent",
    "fsv": "bench.contenders._fs_variant",
}
PARTITIONS = 6


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


def verify(bootstrap: str, group: str, source: str, output: str) -> tuple[int, int]:
    """(records in `output`, offsets of `source` committed by `group`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        count = 0
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(output, p), timeout=10)
            count += high - low
        committed = consumer.committed(
            [TopicPartition(source, p) for p in range(PARTITIONS)], timeout=10
        )
        return count, sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def run_contender(
    name: str, args: argparse.Namespace, data: list[tuple[bytes, bytes]], tag: str
) -> dict[str, Any]:
    """Prepare topics, run one contender in a subprocess, check what it left behind."""
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    source, output, group = f"{tag}-{name}-in", f"{tag}-{name}-out", f"{tag}-{name}-g"
    create_topics(admin, [source, output])
    prefill(args.bootstrap, source, data)
    command = [
        sys.executable,
        "-m",
        CONTENDERS[name],
        "--bootstrap",
        args.bootstrap,
        "--input",
        source,
        "--output",
        output,
        "--group",
        group,
        "--events",
        str(len(data)),
        "--batch",
        str(args.batch),
        "--timeout",
        str(args.timeout),
    ]
    if name == "kit" and args.profile_kit:
        command += ["--profile", args.profile_kit]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KIT_SCHEMAS_DIR": str(ROOT / "schemas")}
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout + 90
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if lines:
            result = json.loads(lines[-1][len("RESULT ") :])
        else:
            result = {"contender": name, "complete": False, "events_per_s": 0}
            result["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    except subprocess.TimeoutExpired:
        result = {"contender": name, "complete": False, "events_per_s": 0, "error": "timeout"}
    result["name"] = name
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["output_records"], result["committed"] = verify(args.bootstrap, group, source, output)
    admin.delete_topics([source, output], operation_timeout=30)
    return result


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per contender")
    parser.add_argument("--batch", type=int, default=500, help="records per fetch (all)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    parser.add_argument("--bootstrap", default=os.environ.get("KIT_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--timeout", type=float, default=600.0, help="per contender (s)")
    parser.add_argument("--profile-kit", default="", help="profile kit into this file")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
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
