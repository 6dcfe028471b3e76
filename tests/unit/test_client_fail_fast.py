"""Client fails fast, with the message `kit run` gives, when no broker answers (issue 11,
point 5). No broker: the client is pointed at a closed port."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from kit import Client, ConfigError, Settings
from tests.fixtures.events import OrderLine, OrderPlaced
from tests.unit.no_broker import closed_port, librdkafka_lines

ORDER = OrderPlaced(
    order_id="o-1",
    customer="c-1",
    lines=[OrderLine(sku="tea", quantity=1, unit_price_cents=100)],
    placed_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def test_client_publish_fails_fast_naming_bootstrap_servers(
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}", connect_timeout=1)

    async def publish() -> None:
        async with Client(settings) as client:
            await asyncio.wait_for(client.publish(ORDER, key="o-1"), 10)

    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        asyncio.run(publish())
    assert time.monotonic() - started < 5
    assert raised.value.setting == "KIT_BOOTSTRAP_SERVERS"
    assert str(raised.value).startswith(
        f"KIT_BOOTSTRAP_SERVERS: no broker answered at 127.0.0.1:{port} "
        "(from KIT_BOOTSTRAP_SERVERS) within 1s"
    )
    captured = capfd.readouterr()
    assert librdkafka_lines(captured.err + captured.out, port) == []


def test_client_without_async_with_fails_fast_at_its_first_publish() -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{closed_port()}", connect_timeout=1)

    async def publish() -> None:
        client = Client(settings)
        try:
            await asyncio.wait_for(client.publish(ORDER, key="o-1"), 10)
        finally:
            await client.close()

    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^KIT_BOOTSTRAP_SERVERS: no broker answered"):
        asyncio.run(publish())
    assert time.monotonic() - started < 5
