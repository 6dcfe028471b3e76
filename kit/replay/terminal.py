"""The terminal side of a long record or replay: a progress line, and Ctrl-C as a clean stop."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

__all__ = ["Progress", "stop_on_sigint"]


class Progress:
    """A one-line progress report: count, rate, and the total when it is known.

    On a terminal the line is redrawn in place; otherwise a line is printed every
    `log_interval` seconds, so logs stay short.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        total: int | None = None,
        unit: str = "records",
        log_interval: float = 5.0,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.unit = unit
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.25 if self.tty else log_interval
        self.started = time.monotonic()
        self._next = self.started + self.interval

    def update(self, count: int) -> None:
        """Report `count` if the interval has passed (cheap to call per record)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._show(count, now, final=False)

    def done(self, count: int, note: str = "") -> None:
        """Print the final line."""
        self._show(count, time.monotonic(), final=True, note=note)

    def _show(self, count: int, now: float, *, final: bool, note: str = "") -> None:
        elapsed = max(now - self.started, 1e-9)
        of = f" of {self.total:,}" if self.total is not None else ""
        pct = f" {100 * count / self.total:5.1f}%" if self.total else ""
        line = (
            f"{self.label}: {count:,}{of} {self.unit}{pct}  "
            f"{count / elapsed:,.0f}/s  {elapsed:.1f}s{note}"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


@contextlib.contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """While active (main thread only), the first Ctrl-C sets `stop`; a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
