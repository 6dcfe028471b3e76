"""kit.transport.deadlines.Deadlines: a requester's call deadlines on one loop timer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from kit.transport.deadlines import Deadlines


@dataclass
class Call:
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def test_calls_still_waiting_at_their_deadlines_end_with_timeout_error_in_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[bytes, Call] = {}
        deadlines = Deadlines(waiting)
        ended: list[bytes] = []
        at: dict[bytes, float] = {}
        now = loop.time()
        after = {b"late": 0.15, b"soon": 0.02, b"answered": 0.01, b"mid": 0.05}
        for call_id, wait in after.items():
            waiting[call_id] = Call()
            waiting[call_id].future.add_done_callback(
                lambda _f, c=call_id: (ended.append(c), at.setdefault(c, loop.time()))
            )
            deadlines.watch(loop, now + wait, call_id)
        waiting[b"answered"].future.set_result("reply")  # answered before its deadline
        futures = (c.future for c in waiting.values())
        await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
        assert ended == [b"answered", b"soon", b"mid", b"late"]
        for call_id in (b"soon", b"mid", b"late"):
            with pytest.raises(TimeoutError):
                waiting[call_id].future.result()
            assert at[call_id] >= now + after[call_id], "expired before its deadline"
        assert waiting[b"answered"].future.result() == "reply"

    asyncio.run(main())


def test_a_call_gone_from_the_waiting_calls_is_never_expired() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[bytes, Call] = {b"gone": Call(), b"kept": Call()}
        gone = waiting.pop(b"gone")  # its caller stopped waiting (answered, or cancelled)
        deadlines = Deadlines(waiting)
        deadlines.watch(loop, loop.time() + 0.01, b"gone")
        deadlines.watch(loop, loop.time() + 0.03, b"kept")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting[b"kept"].future, 5)
        assert not gone.future.done()

    asyncio.run(main())


def test_finished_calls_do_not_pile_up() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[bytes, Call] = {}
        deadlines = Deadlines(waiting)
        for i in range(10_000):  # each answered at once, its deadline far ahead
            call_id = b"%d" % i
            waiting[call_id] = Call()
            deadlines.watch(loop, loop.time() + 30, call_id)
            del waiting[call_id]
        assert len(deadlines._heap) <= 1024 + 1
        deadlines.close()

    asyncio.run(main())


def test_close_forgets_every_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting = {b"a": Call()}
        deadlines = Deadlines(waiting)
        deadlines.watch(loop, loop.time() + 0.01, b"a")
        deadlines.close()
        done, _ = await asyncio.wait([waiting[b"a"].future], timeout=0.1)
        assert not done, "expired after close()"

    asyncio.run(main())
