"""The fault suite's service: one Tock out (same key) for every Tick in, set up by FAULT_* vars.

Run it as a real process: `python -m kit.cli run tests.fault.svc:service`. Everything is
read from the environment at import, so each test gives its own topics:

| variable | default | meaning |
|---|---|---|
| `FAULT_INPUT_TOPIC` | `fault.Tick` | topic of the Ticks the handler takes |
| `FAULT_OUTPUT_TOPIC` | `fault.Tock` | topic the Tocks are published to |
| `FAULT_SLEEP_MS` | 0 | `await asyncio.sleep` per event (a slow handler) |
| `FAULT_OVERSIZE` | | `key:seq`: that Tick's Tock carries `FAULT_OVERSIZE_BYTES` of pad |
| `FAULT_OVERSIZE_BYTES` | 700000 | size of that pad |
| `FAULT_INSTANCE` | `pid-<pid>` | written into every Tock, to tell instances apart |

The consumer group is the kit's: `KIT_GROUP_ID`, else the service name `fault`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kit import Context, Event, Service

SCHEMAS = Path(__file__).resolve().parent / "schemas"


class Tick(Event, schema="fault.Tick", repository=SCHEMAS):
    """Input: the seq-th event of a key."""

    key: str
    seq: int
    pad: str


class Tock(Event, schema="fault.Tock", repository=SCHEMAS):
    """Output: one per handled Tick, with the handling instance's name."""

    key: str
    seq: int
    instance: str
    pad: str


INPUT_TOPIC = os.environ.get("FAULT_INPUT_TOPIC", "fault.Tick")
OUTPUT_TOPIC = os.environ.get("FAULT_OUTPUT_TOPIC", "fault.Tock")
SLEEP = float(os.environ.get("FAULT_SLEEP_MS", "0")) / 1000
INSTANCE = os.environ.get("FAULT_INSTANCE") or f"pid-{os.getpid()}"
_oversize_key, _, _oversize_seq = os.environ.get("FAULT_OVERSIZE", "").rpartition(":")
OVERSIZE = (_oversize_key, int(_oversize_seq)) if _oversize_key else None
OVERSIZE_PAD = "x" * int(os.environ.get("FAULT_OVERSIZE_BYTES", "700000"))

service = Service("fault", version="1.0.0", description="fault-suite echo service")


@service.handler(INPUT_TOPIC)
async def on_tick(tick: Tick, ctx: Context) -> None:
    """Publish the Tick's Tock to the output topic, under the same key."""
    if SLEEP:
        await asyncio.sleep(SLEEP)
    pad = OVERSIZE_PAD if OVERSIZE == (tick.key, tick.seq) else tick.pad
    ctx.publish(
        Tock(key=tick.key, seq=tick.seq, instance=INSTANCE, pad=pad),
        key=tick.key,
        topic=OUTPUT_TOPIC,
    )
