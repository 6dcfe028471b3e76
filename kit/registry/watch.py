"""`Watch`: an async iterator of registry events, subscribed from the moment it is created."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from kit.errors import BrokerError
from kit.registry.view import RegistryEvent

__all__ = ["Watch"]

_Item = RegistryEvent | BaseException | None


class Watch:
    """Up, down and changed events from `Registry.watch()`, in the order the view changed.

    It receives every event from the moment it was created, so nothing is missed between
    a lookup and the first `async for`. It ends when the registry closes. Leave it early
    with `close()`, or use it as a context manager: `with registry.watch() as events:`.
    A dropped, unclosed watch is unsubscribed when it is garbage-collected.
    """

    def __init__(self, unsubscribe: Callable[[Watch], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._unsubscribe = unsubscribe
        self._done = False

    def push(self, item: _Item) -> None:
        """Queue an event (None: the end; an exception: the reader failed); any thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the watcher's loop is closed
            pass

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> RegistryEvent:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, RegistryEvent):
            return item
        self.close()
        if isinstance(item, BaseException):
            raise BrokerError(f"registry reader failed: {item}") from item
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop receiving events; iteration ends, also one waiting for the next event."""
        if not self._done:
            self._done = True
            self._unsubscribe(self)
            self.push(None)  # wakes a pending __anext__

    async def aclose(self) -> None:
        """Async alias of close(), like an async generator's."""
        self.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
