"""``kit run --workers N``: N child processes of one command, supervised as one service."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from kit.errors import ConfigError

__all__ = ["STOP_MARGIN", "Supervisor", "Worker", "check_workers", "supervise"]

STOP_MARGIN = 5.0
"""Seconds a worker gets past KIT_SHUTDOWN_TIMEOUT to exit after a stop signal, before it
is killed: its own stop deadline is KIT_SHUTDOWN_TIMEOUT + 1 s, then the interpreter exits."""

KILL_WAIT = 5.0
"""Seconds to wait for a killed worker to be reaped, and for its output to end."""


def check_workers(workers: int) -> int:
    """`workers` if it is a valid worker count (at least 1), else ConfigError naming --workers."""
    if workers < 1:
        raise ConfigError("--workers", f"must be at least 1 (got {workers})")
    return workers


@dataclass
class Worker:
    """One child process: its number (from 1), its process, and how it ended."""

    number: int
    process: asyncio.subprocess.Process
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    """The tasks that copy its stdout and stderr, each line prefixed with `tag`."""
    killed: bool = False

    @property
    def tag(self) -> str:
        """What each of its output lines starts with."""
        return f"[worker {self.number} pid {self.process.pid}]"

    @property
    def code(self) -> int | None:
        """Its exit code (negative: the signal that ended it), None while it runs."""
        return self.process.returncode


class Supervisor:
    """Run `workers` copies of `command`, forward SIGTERM and SIGINT to them, stop all when
    one ends, and kill any that is still running `stop_timeout` seconds after the stop.

    Exit code: 0 when every worker exited 0; else the first failed worker's code (1 for one
    killed, by a signal or after the deadline). Every line a worker prints is copied with
    its tag (``[worker 2 pid 4711] kit: orders ready: ...``); a JSON log line (one starting
    with ``{``) is copied as it is, since it already names its instance.
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        stop_timeout: float,
        *,
        say: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.command = list(command)
        self.count = check_workers(workers)
        self.stop_timeout = stop_timeout
        self.say = say or (lambda line: print(f"kit: {line}", flush=True))
        self.env = env
        self.stdout, self.stderr = stdout or sys.stdout, stderr or sys.stderr
        self.workers: list[Worker] = []
        self.stop_signal: int | None = None
        """The signal that asked for the stop (None: a worker ended first)."""
        self.first_ended: Worker | None = None
        """The worker whose exit (without a stop signal) stopped the others."""
        self._stop = asyncio.Event()

    async def run(self) -> int:
        """Start the workers, wait for a signal or a worker's end, stop all; the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.signalled, sig)
        try:
            try:
                for number in range(1, self.count + 1):
                    if self._stop.is_set():  # signalled while starting: start no more
                        break
                    self.workers.append(await self._spawn(number))
                await self._watch()
            finally:  # also after a failed spawn: the ones already running are stopped
                await self._stop_all()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self._exit_code()

    def signalled(self, sig: int) -> None:
        """On SIGTERM/SIGINT: forward it to every running worker (again on a second one)."""
        if self.stop_signal is None:
            self.say(f"{signal.Signals(sig).name}: stopping {self._running_count()} workers")
        self.stop_signal = sig
        self._stop.set()
        self._send(sig)

    async def _spawn(self, number: int) -> Worker:
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # signals reach it from this supervisor only, once
        )
        worker = Worker(number, process)
        assert process.stdout is not None and process.stderr is not None
        worker.pumps = [
            asyncio.create_task(_pump(process.stdout, worker.tag, self.stdout)),
            asyncio.create_task(_pump(process.stderr, worker.tag, self.stderr)),
        ]
        return worker

    async def _watch(self) -> None:
        """Wait until a signal asks for a stop or a worker exits; a worker's exit stops all."""
        if self._stop.is_set() or not self.workers:
            return
        stop = asyncio.create_task(self._stop.wait())
        waits = {asyncio.create_task(w.process.wait()): w for w in self.workers}
        try:
            done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [stop, *waits]:
                task.cancel()
        ended = [waits[t] for t in done if t in waits]
        if ended and not self._stop.is_set():
            first = self.first_ended = min(ended, key=lambda w: w.number)
            how = "failed" if first.code else "exited"
            self.say(
                f"worker {first.number} (pid {first.process.pid}) {how} with code {first.code}: "
                f"stopping the other {self._running_count()}"
            )
            self._send(signal.SIGTERM)

    async def _stop_all(self) -> None:
        """Wait for every worker up to the deadline; kill the ones still running, loudly."""
        running = [w for w in self.workers if w.code is None]
        if running and not self._stop.is_set() and self.first_ended is None:
            self._send(signal.SIGTERM)  # neither signalled nor a worker ended: a failed spawn
        waits = [asyncio.create_task(w.process.wait()) for w in running]
        if waits:
            await asyncio.wait(waits, timeout=self.stop_timeout)
        late = [w for w in running if w.code is None]
        for worker in late:
            self.say(
                f"worker {worker.number} (pid {worker.process.pid}) did not stop within "
                f"{self.stop_timeout:g}s: killing it"
            )
            worker.killed = True
            _signal(worker, signal.SIGKILL)
        if late:
            await asyncio.wait(waits, timeout=KILL_WAIT)
        for wait in waits:
            wait.cancel()
        pumps = [p for w in self.workers for p in w.pumps]
        if pumps:  # a grandchild may hold a pipe open: its output is dropped after a while
            await asyncio.wait(pumps, timeout=KILL_WAIT)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*waits, *pumps, return_exceptions=True)

    def _send(self, sig: int) -> None:
        for worker in self.workers:
            if worker.code is None:
                _signal(worker, sig)

    def _running_count(self) -> int:
        return sum(1 for w in self.workers if w.code is None)

    def _exit_code(self) -> int:
        """0 if every worker exited 0; else the code of the worker that ended first (1 for
        one killed or ended by a signal), else of the first other that failed."""
        first = self.first_ended
        for worker in [first] if first is not None and first.code else self.workers:
            code = worker.code
            if worker.killed or code is None or code < 0:
                return 1
            if code != 0:
                return code
        return 0


def _signal(worker: Worker, sig: int) -> None:
    try:
        worker.process.send_signal(sig)
    except ProcessLookupError:  # it exited between the check and the signal
        pass


async def _pump(stream: asyncio.StreamReader, tag: str, out: TextIO) -> None:
    """Copy `stream` line by line to `out`, each line after `tag` (JSON lines as they are)."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line over the stream's limit: take what is there
            raw = await stream.read(65_536)
        if not raw:
            return
        line = raw.decode(errors="replace").rstrip("\n")
        out.write(f"{line}\n" if line.startswith("{") else f"{tag} {line}\n")
        out.flush()


def supervise(
    argv: Sequence[str], workers: int, stop_timeout: float, say: Callable[[str], None]
) -> int:
    """Run ``python -m kit.cli ARGV...`` `workers` times under a Supervisor; its exit code."""
    command = [sys.executable, "-m", "kit.cli", *argv]
    env = dict(os.environ)
    supervisor = Supervisor(command, workers, stop_timeout, say=say, env=env)
    _watch_children_without_threads()
    return asyncio.run(supervisor.run())


def _watch_children_without_threads() -> None:
    """On Python 3.11, where asyncio waits for each child in a thread of its own, wait with
    a pidfd on the event loop instead (Python 3.12 does so by itself)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # kernel older than 5.3, or seccomp: keep asyncio's default
        return
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
