"""The shop's state as its owners hold it: inventory's stock topic, the Faust table's totals.

Stock is read from inventory's compacted state topic (`inventory.state`, the last
`sku/<sku>` record per SKU, read_committed: inventory writes in transactions); the
customer totals are asked of the Faust app with a kit request, `customer_stats.get`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import TopicPartition

from kit import Client
from kit.codec import Codec
from kit.config import Settings
from kit.errors import DecodeError, KitError
from kit.transport.kafka import make_consumer
from services.customer_stats.api import get
from services.customer_stats.events import GetStats
from services.shop_demo.fleet import Spec
from services.shop_demo.plan import PAYMENT_LIMIT_CENTS

__all__ = [
    "FAUST_APP",
    "FAUST_NAME",
    "StockReader",
    "ask_stats",
    "faust_spec",
    "notifications",
    "stock_topic",
]

FAUST_NAME = "customer_stats"
FAUST_APP = "services.customer_stats.app"
"""The Faust app module, as `faust -A` takes it."""


def scenario_env() -> dict[str, str]:
    """The services' settings the scenario's outcomes depend on."""
    return {"SHOP_PAYMENT_LIMIT_CENTS": str(PAYMENT_LIMIT_CENTS)}


def scenario_service_env() -> dict[str, dict[str, str]]:
    """Settings of one service each: payments exactly-once, as docs/shop.md advises (a
    payment redone after a crash would be confirmed, and counted, twice)."""
    return {"payments": {"KIT_EXACTLY_ONCE": "true"}}


def faust_command() -> list[str]:
    """`faust` of this interpreter's environment, else `python -m faust`."""
    script = Path(sys.executable).with_name("faust")
    return [str(script)] if script.exists() else [sys.executable, "-m", "faust"]


def faust_spec(env: Mapping[str, str], log_dir: Path) -> Spec:
    """The customer_stats worker, the way Faust runs: `faust -A APP worker`, in its own
    folder (Faust keeps the table's local data in the working directory), no web server."""
    data = log_dir / "customer_stats-data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [*faust_command(), "-A", FAUST_APP, "worker", "-l", "info", "--without-web"]
    return Spec(FAUST_NAME, argv, lambda line: "Ready" in line, dict(env), data)


async def ask_stats(
    client: Client, customers: list[str], timeout: float = 5.0
) -> dict[str, tuple[int, int] | None]:
    """(orders, total cents) per customer from the Faust table, or None where no answer."""

    async def one(customer: str) -> tuple[int, int] | None:
        try:
            stats = await client.request(get, GetStats(customer=customer), timeout=timeout)
        except KitError:
            return None
        return (stats.orders, stats.total_cents)

    answers = await asyncio.gather(*(one(c) for c in customers))
    return dict(zip(customers, answers, strict=True))


def stock_topic() -> str:
    """Inventory's state topic (its SHOP_INVENTORY_TOPIC, default inventory.state)."""
    return os.environ.get("SHOP_INVENTORY_TOPIC") or "inventory.state"


class StockReader:
    """The latest available units per SKU on the state topic (`read()` blocks: use a thread)."""

    def __init__(self, settings: Settings, codec: Codec, run: str, topic: str | None = None):
        self.topic = topic or stock_topic()
        self.run = run
        self.codec = codec
        self.available: dict[str, int] = {}
        self.consumer = make_consumer(
            settings,
            f"kit-shop-demo-stock-{run}",
            **{"enable.auto.commit": False, "isolation.level": "read_committed"},
        )
        self._assigned = False

    def close(self) -> None:
        self.consumer.close()

    def _assign(self) -> bool:
        meta = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        self.consumer.assign([TopicPartition(self.topic, p, -2) for p in meta.partitions])
        self._assigned = True
        return True

    def read(self, max_seconds: float = 2.0) -> dict[str, int]:
        """Read what the topic has now; the run's SKUs and their available units."""
        if not self._assigned and not self._assign():
            return {}
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            batch = self.consumer.consume(500, 0.2)
            if not batch:
                break
            for msg in batch:
                key = (msg.key() or b"").decode(errors="replace")
                if msg.error() is not None or not key.startswith("sku/") or self.run not in key:
                    continue
                if msg.value() is None:
                    self.available.pop(key[4:], None)
                    continue
                try:
                    value = self.codec.decode_any(msg.value())
                except DecodeError:
                    continue
                self.available[str(value["sku"])] = int(value["available"])
        return dict(self.available)


_NOTIFIED = re.compile(r"\border (\S+) ")


def notifications(path: Path, run: str) -> Counter[str]:
    """Notifications per order id of this run in the notifications service's file
    (SHOP_NOTIFICATIONS_FILE: one line each, "to CUSTOMER: order ID ...")."""
    if not path.exists():
        return Counter()
    found: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NOTIFIED.search(line)
        if match and match.group(1).startswith(run):
            found[match.group(1)] += 1
    return found
