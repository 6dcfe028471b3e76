"""Real `kit run` processes for the fault suite: start, wait until assigned, signal, record exits.

A `Fleet` holds every instance one test started; each instance's output goes to a log file
(and stays in memory for waits); `Fleet.close()` kills what is still running. Every wait has
a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kit.testing.process import OutputLines, spawn_python
from tests.fault.svc import SCHEMAS

__all__ = ["ROOT", "Exit", "Fleet", "Instance", "rss_kib"]

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "tests.fault.svc:service"


@dataclass
class Exit:
    """How one instance ended: the signal the test sent (if any), exit code, time to exit."""

    name: str
    signal: str | None
    code: int
    seconds: float
    tail: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        how = f"after {self.signal} in {self.seconds:.2f}s" if self.signal else "by itself"
        return f"{self.name} exited {self.code} {how}"


class Instance:
    """One `python -m kit.cli run tests.fault.svc:service` process."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w", buffering=1)
        self.started = time.monotonic()
        self.proc: subprocess.Popen[str] = spawn_python(
            ["-m", "kit.cli", "run", SERVICE], env={**env, "FAULT_INSTANCE": name}, cwd=ROOT
        )
        self.out = OutputLines(self.proc, echo=self._log.write)
        self.signalled: tuple[str, float] | None = None
        self.exit: Exit | None = None
        self.ended_at = 0.0
        self._ended = threading.Event()
        threading.Thread(target=self._reap, name=f"reap-{name}", daemon=True).start()

    def _reap(self) -> None:
        self.proc.wait()
        self.ended_at = time.monotonic()
        self._ended.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def assigned(self, topic: str) -> bool:
        """True once the instance logged an assignment of some partition of `topic`."""
        return any(" assigned " in line and f"{topic}[" in line for line in self.out.lines)

    def wait_assigned(self, topic: str, timeout: float = 60.0) -> float:
        """Wait until partitions of `topic` are assigned; returns seconds since the start."""
        self.out.wait(
            lambda lines: next(
                (ln for ln in lines if " assigned " in ln and f"{topic}[" in ln), None
            ),
            timeout,
            f"{self.name}: partitions of {topic} assigned",
        )
        return time.monotonic() - self.started

    def send(self, sig: signal.Signals) -> None:
        """Send a signal (once per instance is what the suite does)."""
        if self.signalled is None:
            self.signalled = (sig.name, time.monotonic())
        self.proc.send_signal(sig)

    def ended(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process to end; True if it has."""
        return self._ended.wait(max(timeout, 0.0))

    def wait_exit(self, timeout: float) -> Exit:
        """Wait for the process to end; AssertionError with its output tail if it does not."""
        if self.exit is not None:
            return self.exit
        if not self._ended.wait(timeout):
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.tail()}")
        code = self.proc.returncode
        self.out.wait(lambda _lines: True if self.out.ended else None, 10, "end of output")
        sig, at = self.signalled or (None, self.started)
        if sig is not None and self.ended_at < at:  # it had already ended by itself
            sig, at = None, self.started
        self.exit = Exit(self.name, sig, code, self.ended_at - at, self.out.lines[-15:])
        self._log.close()
        return self.exit

    def tail(self, lines: int = 25) -> str:
        return "".join(self.out.lines[-lines:])

    def grep(self, text: str) -> list[str]:
        """Output lines containing `text`."""
        return [line.rstrip() for line in self.out.lines if text in line]


class Fleet:
    """The instances of one test: same environment, numbered names, logs under `log_dir`."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env: dict[str, str] = {
            "PYTHONPATH": str(ROOT),
            "KIT_SCHEMAS_DIR": str(SCHEMAS),
            "KIT_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.instances: list[Instance] = []

    def start(self, **env: str) -> Instance:
        name = f"i{len(self.instances) + 1:02d}"
        instance = Instance(name, {**self.env, **env}, self.log_dir / f"{name}.log")
        self.instances.append(instance)
        return instance

    @property
    def alive(self) -> list[Instance]:
        return [i for i in self.instances if i.alive]

    @property
    def exits(self) -> list[Exit]:
        return [i.exit for i in self.instances if i.exit is not None]

    def stop(self, instance: Instance, sig: signal.Signals, timeout: float = 60.0) -> Exit:
        """Send `sig` and wait for the exit."""
        instance.send(sig)
        return instance.wait_exit(timeout)

    def close(self) -> None:
        """Kill every instance still running (the test's own children, by pid)."""
        for instance in self.instances:
            if instance.alive:
                instance.send(signal.SIGKILL)
        for instance in self.instances:
            if instance.exit is None:
                try:
                    instance.wait_exit(30)
                except AssertionError:
                    pass


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (VmRSS from /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
