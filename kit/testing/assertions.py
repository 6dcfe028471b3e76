"""Assertions that explain themselves, and waiting for an event on a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from kit.event import Event

if TYPE_CHECKING:
    from kit.client import Client
    from kit.testing.harness import Harness

__all__ = ["assert_emitted", "assert_no_dead_letters", "wait_for_event"]

E = TypeVar("E", bound=Event)


def assert_emitted(harness: Harness, expected: Event, *, topic: str | None = None) -> None:
    """Fail, showing the closest emitted event and its differing fields, unless emitted."""
    from kit.replay.shadow import field_changes

    candidates = harness.emitted(type(expected), topic=topic)
    if expected in candidates:
        return
    name = type(expected).__name__
    if not candidates:
        raise AssertionError(f"no {name} was emitted; expected {expected!r}")
    want = expected.model_dump()
    scored = [(list(field_changes(want, c.model_dump(), "")), c) for c in candidates]
    changes, closest = min(scored, key=lambda item: len(item[0]))
    lines = [f"  {c.path}: expected {c.recorded!r}, got {c.shadow!r}" for c in changes]
    raise AssertionError(
        f"expected {name} was not emitted ({len(candidates)} {name} emitted); "
        f"the closest differs in:\n" + "\n".join(lines) + f"\nclosest: {closest!r}"
    )


def assert_no_dead_letters(harness: Harness) -> None:
    """Fail, listing each dead letter's reason, if any record was dead-lettered."""
    letters = harness.dead_letters()
    if letters:
        reasons = [
            f"  {d.headers.get('kit-dlt-original-topic', b'?').decode()}@"
            f"{d.headers.get('kit-dlt-original-offset', b'?').decode()}: "
            f"{d.headers.get('kit-dlt-exception-type', b'?').decode()}: "
            f"{d.headers.get('kit-dlt-exception-message', b'').decode()}"
            for d in letters
        ]
        raise AssertionError(f"{len(letters)} record(s) dead-lettered:\n" + "\n".join(reasons))


async def wait_for_event(
    client: Client,
    topic: str,
    model: type[E],
    match: Callable[[E], bool] = lambda _e: True,
    *,
    timeout: float = 10.0,
) -> E:
    """Read `topic` on a real broker until an event matching `match` is seen, or fail."""

    async def look() -> E | None:
        async for _msg, event in client.consume(topic, model, timeout=timeout):
            if match(event):
                return event
        return None

    try:
        found = await asyncio.wait_for(look(), timeout + 5)
    except TimeoutError:
        found = None
    if found is None:
        raise AssertionError(f"no matching {model.__name__} on {topic} within {timeout}s")
    return found
