"""Record/replay throughput and file size: N small kit events, compared with the raw client.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.replay [N=100000] [deflate|null]
Prints JSON with record and replay rates, the raw client's rates, and bytes per event.
"""

import io
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import schemaless_writer

from bench.common import SCHEMA_FILE
from kit import load_settings
from kit.replay import RecordingReader, record, replay
from kit.schema import Schema
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from kit.transport.schema_topic import SchemaTopic

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
CODEC = sys.argv[2] if len(sys.argv) > 2 else "deflate"
BOOT = os.environ.get("KIT_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
settings = load_settings(bootstrap_servers=BOOT)
admin = admin_client(settings)
schema = Schema.from_json(SCHEMA_FILE.read_text())
SchemaTopic(settings, admin).publish([schema])
topic = f"bench-rec-{uuid.uuid4().hex[:8]}"
ensure_topics(admin, [TopicSpec(topic, 3, 1)])


def value(n):
    b = io.BytesIO()
    b.write(b"\xc3\x01" + schema.fingerprint)
    schemaless_writer(
        b,
        schema.parsed,
        {
            "id": n,
            "sensor": f"sensor-{n % 50}",
            "site": "plant-7",
            "value": n * 0.25,
            "unit": "celsius",
            "taken_at": 1_760_000_000_000 + n,
            "ok": n % 10 != 0,
        },
    )
    return b.getvalue()


p = Producer({"bootstrap.servers": BOOT, "linger.ms": 5, "queue.buffering.max.messages": 200_000})
raw = 0
for n in range(N):
    k, v, h = f"sensor-{n % 50}".encode(), value(n), [("kit-type", b"bench.Reading")]
    raw += len(k) + len(v) + sum(len(a) + len(b) for a, b in h)
    while True:
        try:
            p.produce(topic, v, k, headers=h)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
assert p.flush(60) == 0

# Raw baseline: a bare consumer reading the same records to the end (no file).
c = Consumer({"bootstrap.servers": BOOT, "group.id": "bench-raw", "enable.auto.commit": False})
c.assign([TopicPartition(topic, i, 0) for i in range(3)])
t0 = time.perf_counter()
got = 0
while got < N:
    got += sum(1 for m in c.consume(500, 1.0) if not m.error())
raw_read = time.perf_counter() - t0
c.close()

path = Path(f"/tmp/{topic}.kitrec")
rec = record([topic], path, settings=settings, codec=CODEC)
assert rec.records == N, rec

t0 = time.perf_counter()
cnt = sum(1 for _ in RecordingReader(path))
read_s = time.perf_counter() - t0

# Raw baseline: a bare producer publishing the same records from memory.
items = [r for _, r in RecordingReader(path)]
p2 = Producer(
    {
        "bootstrap.servers": BOOT,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "queue.buffering.max.messages": 200_000,
    }
)
tgt0 = topic + "-raw"
ensure_topics(admin, [TopicSpec(tgt0, 3, 1)])
t0 = time.perf_counter()
for r in items:
    while True:
        try:
            p2.produce(tgt0, r.value, r.key, partition=r.partition, headers=list(r.headers))
            break
        except BufferError:
            p2.poll(0.01)
    p2.poll(0)
assert p2.flush(60) == 0
raw_write = time.perf_counter() - t0

rep = replay(path, settings=settings, topic_map={topic: topic + "-copy"})
assert rep.published == N
out = {
    "events": N,
    "codec": CODEC,
    "record_per_s": round(rec.rate),
    "raw_consume_per_s": round(N / raw_read),
    "file_read_per_s": round(cnt / read_s),
    "replay_per_s": round(rep.rate),
    "raw_produce_per_s": round(N / raw_write),
    "file_bytes_per_event": round(rec.file_bytes / N, 1),
    "raw_bytes_per_event": round(raw / N, 1),
    "file_vs_raw": round(rec.file_bytes / raw, 2),
    "nproc": os.cpu_count(),
    "python": platform.python_version(),
}
print(json.dumps(out))
path.unlink()
