"""The consumer's one thread: calls in order, errors passed back, never holding the process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from kit.runtime import ConsumerThread


def test_calls_run_in_order_on_one_thread_and_errors_come_back() -> None:
    thread = ConsumerThread("test-consumer")
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        if n == 3:
            raise ValueError("three")
        return n * 10

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(thread, call, n) for n in range(5)]
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(scenario())
    thread.shutdown()
    assert [n for n, _name in seen] == [0, 1, 2, 3, 4]
    assert {name for _n, name in seen} == {"test-consumer"}
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], ValueError)


def test_a_call_that_never_returns_does_not_keep_the_process_alive() -> None:
    """The stop of a service whose consumer.close() waited for ever on a group coordinator
    that did not answer never ended: the consumer ran on a non-daemon executor thread."""
    code = (
        "import threading\n"
        "from kit.runtime import ConsumerThread\n"
        "t = ConsumerThread('stuck')\n"
        "t.submit(threading.Event().wait)\n"
        "t.shutdown(wait=False)\n"
        "print('exiting')\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit while a consumer call hung")
    assert done.returncode == 0 and "exiting" in done.stdout
