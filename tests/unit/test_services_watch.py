"""`kit services --watch`: a live table on a terminal, plain lines into a pipe."""

from __future__ import annotations

import asyncio
import io

from kit.cli.services import _redraw


class _Registry:
    topic = "_kit_registry"
    ttl = 6.0

    def instances(self) -> list[object]:
        return []

    def lookup(self, _service: str) -> list[object]:
        return []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _watch(out: io.StringIO) -> str:
    async def scenario() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        await _redraw(_Registry(), None, 0.01, stop, out)  # type: ignore[arg-type]

    asyncio.run(scenario())
    return out.getvalue()


def test_into_a_pipe_the_table_is_printed_as_plain_lines() -> None:
    text = _watch(io.StringIO())
    assert "\x1b" not in text  # no clear-screen or cursor codes
    assert text.count("kit services --watch (Ctrl-C to stop)") >= 2  # redrawn, line by line


def test_on_a_terminal_the_table_is_redrawn_in_place() -> None:
    text = _watch(_Terminal())
    assert "kit services --watch (Ctrl-C to stop)" in text
    assert "\x1b[" in text  # rich moves the cursor back over the previous table
