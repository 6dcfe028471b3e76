"""Liveness and readiness of the runtimes of a process, as orchestrators ask for them.

`live`: each runtime's event loop still turns (a `LoopWatch` task stamps the time every
half second; a stamp older than KIT_HEALTH_STUCK_AFTER fails), no handler call has run
longer than KIT_HEALTH_STUCK_AFTER (`Stats.stuck_for`), and no fatal error stopped it (a
delivery that failed for good, or the error its `run()` ended with). `ready`: partitions
assigned (the first assignment came; a service without handlers needs none), announced
on the registry (its registration delivered to the broker, when discovery is on) and not
stopping. Both are read from the HTTP server's thread: each check only reads attributes
the loop writes, never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kit.telemetry import Stats

if TYPE_CHECKING:
    from kit.runtime import Runtime

__all__ = ["LIVE_CHECKS", "READY_CHECKS", "LoopWatch", "Watched", "live", "ready", "report"]

LIVE_CHECKS = ("loop_turning", "no_stuck_handler", "no_fatal_error")
"""The checks of /health/live, in the order they are reported."""
READY_CHECKS = ("assigned", "announced", "not_stopping")
"""The checks of /health/ready, in the order they are reported."""


class LoopWatch:
    """A task on a runtime's loop that stamps `time.monotonic()` every `interval` seconds;
    a stamp older than the liveness limit means the loop stopped turning."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.stamp = time.monotonic()
        """When the loop last ran the task (monotonic seconds); read from any thread."""
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        """Start stamping on the running loop (owned here: `stop` cancels it)."""
        self.stamp = time.monotonic()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            self.stamp = time.monotonic()
            await asyncio.sleep(self.interval)


@dataclass
class Watched:
    """One runtime the health endpoints report on, with its loop watch."""

    runtime: Runtime
    watch: LoopWatch = field(default_factory=LoopWatch)

    @property
    def stats(self) -> Stats:
        """The runtime's counters (an empty Stats if it keeps none)."""
        stats = getattr(self.runtime, "stats", None)
        return stats if isinstance(stats, Stats) else _NO_STATS


_NO_STATS = Stats()


def fatal_error(runtime: Runtime) -> BaseException | None:
    """The error that stops (or stopped) `runtime`, if any: a delivery failed for good, or
    what its run() raised (when the runtime records it as `error`)."""
    error = getattr(runtime, "error", None)
    if isinstance(error, BaseException):
        return error
    commits = getattr(runtime, "commits", None)
    failed = getattr(commits, "failed", None)
    return failed if isinstance(failed, BaseException) else None


def live(watched: Watched, limit: float, now: float | None = None) -> dict[str, bool]:
    """The liveness checks of one runtime (check name → passed)."""
    now = time.monotonic() if now is None else now
    return {
        "loop_turning": now - watched.watch.stamp <= limit,
        "no_stuck_handler": watched.stats.stuck_for(now) <= limit,
        "no_fatal_error": fatal_error(watched.runtime) is None,
    }


def ready(watched: Watched) -> dict[str, bool]:
    """The readiness checks of one runtime (check name → passed)."""
    runtime = watched.runtime
    announcer = runtime.announcer
    return {
        "assigned": runtime.ready.is_set() or not runtime.service.handlers,
        "announced": announcer is None or getattr(announcer, "delivered", False) is True,
        "not_stopping": not runtime.stopping,
    }


def report(
    kind: str, watched: Iterable[Watched], limit: float, now: float | None = None
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of `/health/<kind>` (live or ready) over `watched`: 200
    when every check of every runtime passed, else 503 with the failing ones named as
    "<service>/<instance id>: <check>". No runtime at all is not healthy either."""
    instances: list[dict[str, Any]] = []  # Any: JSON values
    failing: list[str] = []
    for item in watched:
        checks = live(item, limit, now) if kind == "live" else ready(item)
        rt = item.runtime
        instances.append(
            {"service": rt.service.name, "instance_id": rt.instance_id, "checks": checks}
        )
        failing += [
            f"{rt.service.name}/{rt.instance_id}: {c}" for c, ok in checks.items() if not ok
        ]
    if not instances:
        failing.append("no running service")
    body: dict[str, Any] = {  # Any: JSON values
        "status": "fail" if failing else "pass",
        "check": kind,
        "failing": failing,
        "instances": instances,
    }
    return (503 if failing else 200), json.dumps(body).encode()
