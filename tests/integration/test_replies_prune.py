"""Reply topics of dead requesters are pruned; a pruned live requester heals itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kit import Client, Settings
from kit.replies import prune_reply_topics
from kit.rpc import REPLY_TOPIC_PREFIX
from kit.testing.wait import wait_until_async
from kit.transport.admin import TopicSpec, ensure_topics
from kit.transport.kafka import admin_client
from tests.fixtures.events import CheckStock, StockLevel
from tests.integration.helpers import running
from tests.integration.test_rpc import inventory

pytestmark = pytest.mark.integration


def test_prune_removes_dead_reply_topics_and_live_requesters_recover(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    dead = f"{REPLY_TOPIC_PREFIX}{unique_name('dead')}"
    ensure_topics(admin_client(kit_settings), [TopicSpec(dead, 1, 1)])
    name = unique_name("inv")

    async def scenario() -> None:
        async with running(inventory(name), kit_settings) as rt, Client(kit_settings) as client:
            ask = lambda: client.request(  # noqa: E731
                f"{name}.check", CheckStock(sku="tea", quantity=1), reply=StockLevel, timeout=10
            )
            await ask()
            mine = client.requester.reply_topic
            # the runtime's own reply topic (what ctx.request uses): its consumer is a live
            # group member, so no prune removes it
            runtimes = (await rt.requester()).reply_topic
            # a fresh, marked topic survives a prune with a 1 h idle limit
            stale = await asyncio.to_thread(prune_reply_topics, kit_settings, idle=3600)
            assert dead in stale and mine not in stale
            # with no idle limit even a live standalone client's topic goes...
            stale = await asyncio.to_thread(prune_reply_topics, kit_settings, idle=0)
            assert mine in stale and runtimes not in stale
            assert runtimes in admin_client(kit_settings).list_topics(timeout=10).topics
            # ...and the requester re-creates it before its next request (once the broker's
            # metadata no longer lists it, as when a prune ran while the caller was idle)
            admin = admin_client(kit_settings)
            await wait_until_async(
                lambda: mine not in admin.list_topics(timeout=10).topics, timeout=30
            )
            client.requester._verified = 0.0
            level = await ask()
            assert level.enough

    asyncio.run(scenario())
