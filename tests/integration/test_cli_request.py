"""`kit request` against a running responder: reply as JSON, exit codes for failures."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kit import Settings
from kit.transport.admin import TopicSpec, ensure_topics
from tests.fixtures import SCHEMAS
from tests.integration.helpers import running
from tests.integration.test_rpc import inventory

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kit_request(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit.cli", "request", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KIT_SCHEMAS_DIR": str(SCHEMAS), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kit_request_prints_reply_and_exits_non_zero_on_failures(
    kit_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("cli")
    schema = ("--schema", "inventory.CheckStock")
    nobody = name + "-nobody"
    settings = kit_settings.model_copy(update={"remote_tracebacks": True})

    async def scenario() -> list[subprocess.CompletedProcess[str]]:
        async with running(inventory(name), settings):
            calls = [
                (name, "check", "--json", '{"sku": "tea", "quantity": 3}', *schema),
                (name, "check", "--json", '{"sku": "boom", "quantity": 3}', *schema),
                (name, "check", "--json", '{"sku": 5}', *schema),
                (name, "check", "--json", "{not json", *schema),
                (
                    nobody,
                    "check",
                    "--json",
                    '{"sku": "a", "quantity": 1}',
                    *schema,
                    "--timeout",
                    "5",  # fail-fast answers at once; the registry check gets up to 2 s
                ),
                (name, "check", "--json", '{"sku": "tea", "quantity": 1}'),  # schema: registry
                (nobody, "check", "--json", '{"sku": "tea", "quantity": 1}'),  # no --schema
                (
                    name,
                    "chek",
                    "--json",
                    '{"sku": "tea", "quantity": 1}',
                    *schema,
                    "--timeout",
                    "30",
                ),
            ]
            done = [await asyncio.to_thread(kit_request, *c) for c in calls]
            no_fail_fast = {"KIT_REGISTRY_FAIL_FAST": "false"}
            no_topic = (*calls[4], "--timeout", "1")  # the last --timeout wins
            done.append(await asyncio.to_thread(kit_request, *no_topic, env=no_fail_fast))
            admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
            await asyncio.to_thread(ensure_topics, admin, [TopicSpec(f"{nobody}.check", 1, -1)])
            done.append(await asyncio.to_thread(kit_request, *no_topic, env=no_fail_fast))
            done.append(await asyncio.to_thread(_topics, admin))
            return done

    ok, remote, invalid, not_json, unavailable, found, down, wrong, missing, timeout, topics = (
        asyncio.run(scenario())
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "sku": "tea",
        "available": 10,
        "enough": True,
        "request_id": None,
        "served_by": "",
    }
    assert ok.stderr == ""  # no INFO line on every call
    assert remote.returncode == 4 and "KeyError" in remote.stderr
    assert "Traceback (most recent call last)" in remote.stderr  # the responder sent it
    assert invalid.returncode == 2 and "$.sku: expected string" in invalid.stderr
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    assert unavailable.returncode == 5 and "no live instance" in unavailable.stderr
    assert found.returncode == 0 and json.loads(found.stdout)["enough"] is True, found.stderr
    assert down.returncode == 5 and "no live instance" in down.stderr  # as the README says
    assert wrong.returncode == 2 and "its responders: check" in wrong.stderr, wrong.stderr
    assert missing.returncode == 5 and "no request topic" in missing.stderr, missing.stderr
    assert timeout.returncode == 3 and "timed out after 1." in timeout.stderr
    assert f"{name}.chek" not in topics.stdout  # never created from the CLI


def _topics(admin: AdminClient) -> subprocess.CompletedProcess[str]:
    names = "\n".join(sorted(admin.list_topics(timeout=10).topics))
    return subprocess.CompletedProcess([], 0, names, "")
