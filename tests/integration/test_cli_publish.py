"""`kit publish` and `kit topics` against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kit import Codec, Settings
from kit.schema import repository_for
from kit.transport.admin import TopicSpec, ensure_topics
from tests.fixtures import SCHEMAS
from tests.fixtures.events import CheckStock
from tests.integration.helpers import read_raw

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KIT_SCHEMAS_DIR": str(SCHEMAS)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_publish_sends_one_validated_event_and_topics_counts_it(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    bootstrap = kit_settings.bootstrap_servers or ""
    topic, missing = unique_name("stock"), unique_name("missing")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, [TopicSpec(topic, 2, -1)])
    body = '{"sku": "tea", "quantity": 3}'

    sent = kit("publish", topic, "--json", body, "--key", "k1", "--schema", "inventory.CheckStock")
    bad = kit("publish", topic, "--json", '{"sku": 5}', "--schema", "inventory.CheckStock")
    nowhere = kit("publish", missing, "--json", body, "--schema", "inventory.CheckStock")
    listed = kit("topics", "--json")

    assert sent.returncode == 0, sent.stderr
    [record] = read_raw(bootstrap, topic, 1)
    codec = Codec(repository_for(schemas_dir=SCHEMAS))
    assert record.key() == b"k1"
    assert codec.decode(record.value(), CheckStock) == CheckStock(sku="tea", quantity=3)
    assert bad.returncode == 2 and "$.sku" in bad.stderr, bad.stderr
    assert nowhere.returncode == 2 and "--create" in nowhere.stderr, nowhere.stderr
    rows = {row["topic"]: row for row in json.loads(listed.stdout)}
    assert rows[topic]["partitions"] == 2 and sum(rows[topic]["end_offsets"]) == 1
    assert missing not in rows  # kit publish created nothing
    assert not any(name.startswith("__") for name in rows)  # Kafka's own: with --internal
