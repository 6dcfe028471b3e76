"""Run a kit process (`kit run ...`) beside a test and wait for its output with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["OutputLines", "spawn_python"]

T = TypeVar("T")


def spawn_python(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None
) -> subprocess.Popen[str]:
    """Start `python ARGS...` (this interpreter) with stdout and stderr on one text pipe.

    `env` is added to this process's environment. Read the pipe with `OutputLines`, so a
    chatty child never blocks on a full pipe.
    """
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class OutputLines:
    """Reads a process's output in a thread for its whole life; waits on it with deadlines.

    `echo`, if given, sees every line as it arrives (to show a child's log, say).
    """

    def __init__(
        self, proc: subprocess.Popen[str], echo: Callable[[str], None] | None = None
    ) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.ended = False
        self._echo = echo
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="kit-output-lines", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self._echo is not None:
                self._echo(line)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait(self, pick: Callable[[list[str]], T | None], timeout: float, what: str) -> T:
        """Wait until `pick(lines)` returns something other than None, and return it.

        Raises TimeoutError after `timeout` seconds, or at once if the output ended (the
        process exited) without it; the message holds the output so far.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = pick(self.lines)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    why = "the output ended" if self.ended else f"not within {timeout:g}s"
                    raise TimeoutError(f"{what}: {why}:\n{''.join(self.lines)}")
                self._changed.wait(left)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line containing `text`, waiting for it (see `wait`)."""
        return self.wait(
            lambda lines: next((line for line in lines if text in line), None),
            timeout,
            f"a line with {text!r}",
        )
