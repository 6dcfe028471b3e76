"""The deadlines of a requester's calls, kept on one loop timer instead of one per call."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Deadlines"]


class _Waiting(Protocol):
    future: asyncio.Future[Any]  # Any: whatever the call waits for


class Deadlines:
    """Ends the wait of each call still waiting at its deadline with TimeoutError.

    A loop timer per call costs a TimerHandle, a push onto the loop's heap (ordered by a
    Python `__lt__`), a cancel, and a pop of the cancelled handle later: several
    microseconds per call, most of them Python calls. Here a call's deadline is a tuple
    pushed onto a heap of our own (compared in C), a finished call is not removed (it is
    skipped when it comes up, or dropped when the heap is compacted), and one loop timer
    is armed for the earliest deadline. Used on the event loop only.
    """

    __slots__ = ("_heap", "_timer", "waiting")

    def __init__(self, waiting: Mapping[bytes, _Waiting]) -> None:
        self.waiting = waiting
        """The calls by id: a call is expired if it is still here and not done."""
        self._heap: list[tuple[float, bytes]] = []
        self._timer: asyncio.TimerHandle | None = None
        """Armed for the earliest deadline of a call that was waiting when it was armed."""

    def watch(self, loop: asyncio.AbstractEventLoop, deadline: float, call_id: bytes) -> None:
        """Expire call `call_id` at `deadline` (loop time) if it is still waiting then."""
        heap = self._heap
        heapq.heappush(heap, (deadline, call_id))
        if self._timer is None or deadline < self._timer.when():
            self._arm(loop, deadline)
        elif len(heap) > 2 * len(self.waiting) + 1024:  # mostly finished calls: drop them
            waiting = self.waiting
            heap[:] = [entry for entry in heap if entry[1] in waiting]
            heapq.heapify(heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer fired: expire every call past its deadline; arm for the next one."""
        self._timer = None
        heap, waiting, now = self._heap, self.waiting, loop.time()
        while heap:
            deadline, call_id = heap[0]
            call = waiting.get(call_id)
            if call is not None and not call.future.done():
                if deadline > now:
                    self._arm(loop, deadline)
                    return
                call.future.set_exception(TimeoutError())
            heapq.heappop(heap)

    def close(self) -> None:
        """Forget every deadline and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._heap.clear()
