"""The shop's processes: each service under `kit run`, the Faust worker, each with a log file.

Every process is ours (started here, ended here by its pid): SIGTERM first, a bounded wait,
then SIGKILL. Every wait has a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kit.testing.process import OutputLines

__all__ = ["KIT_SERVICES", "ROOT", "Fleet", "Proc", "kit_command"]

ROOT = Path(__file__).resolve().parents[2]
KIT_SERVICES = ("inventory", "orders", "payments", "notifications")
"""The shop's kit services, started in this order (each as services.<name>:service)."""


def kit_command() -> list[str]:
    """`kit` of this interpreter's environment (the console script), else `python -m kit.cli`."""
    script = Path(sys.executable).with_name("kit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kit.cli"]


@dataclass
class Spec:
    """How to start one process, and the output line that says it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[str], bool]
    env: dict[str, str]
    cwd: Path


class Proc:
    """One running process of the shop; its output goes to `log_path` and stays in memory."""

    def __init__(self, spec: Spec, log_path: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.log_path = log_path
        self._log: IO[str] = log_path.open("a", buffering=1)
        self.started = time.monotonic()
        self.popen: subprocess.Popen[str] = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.out = OutputLines(self.popen, echo=self._write)
        self.returncode: int | None = None
        self.terminated = False
        """SIGTERM was sent (once: a second one may end a graceful stop abruptly)."""

    def _write(self, line: str) -> None:
        self._log.write(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float) -> str:
        """The line saying the process is ready; TimeoutError (with the output) otherwise."""
        return self.out.wait(
            lambda lines: next((ln for ln in lines if self.spec.ready(ln)), None),
            timeout,
            f"{self.name} ready",
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM, once."""
        if not self.terminated:
            self.terminated = True
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float) -> int:
        """SIGTERM, wait up to `timeout` s, else SIGKILL; the exit code (negative: a signal)."""
        self.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        return self.finish()

    def kill(self) -> int:
        """SIGKILL and wait (bounded) for the exit."""
        self.signal(signal.SIGKILL)
        self.popen.wait(30)
        return self.finish()

    def finish(self) -> int:
        self.returncode = self.popen.returncode
        self.out.wait(lambda _lines: True if self.out.ended else None, 10, "end of output")
        self._log.close()
        return self.returncode

    def tail(self, lines: int = 20) -> str:
        return "".join(self.out.lines[-lines:])


class Fleet:
    """The processes of one run: start by spec, restart by name, stop all in reverse order."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.specs: dict[str, Spec] = {}
        self.procs: dict[str, Proc] = {}
        self.exits: list[tuple[str, int]] = []
        """(name, exit code) of each process stopped with SIGTERM."""
        self.killed: list[tuple[str, int]] = []
        """(name, exit code) of each process killed on purpose (SIGKILL)."""

    def add_kit_service(self, name: str, env: Mapping[str, str] | None = None) -> Spec:
        """Declare `kit run services.NAME:service`, ready at its "NAME ready:" line."""
        argv = [*kit_command(), "run", f"services.{name}:service"]
        marker = f"{name} ready:"
        spec = Spec(name, argv, lambda line: marker in line, {**self.env, **(env or {})}, ROOT)
        self.specs[name] = spec
        return spec

    def add(self, spec: Spec) -> Spec:
        self.specs[spec.name] = spec
        return spec

    def start(self, names: Sequence[str], timeout: float = 90.0) -> list[str]:
        """Start these processes together; wait until each is ready. Their ready lines."""
        for name in names:
            self.procs[name] = Proc(self.specs[name], self.log_dir / f"{name}.log")
        ready = []
        deadline = time.monotonic() + timeout
        for name in names:
            left = max(1.0, deadline - time.monotonic())
            try:
                ready.append(self.procs[name].wait_ready(left).strip())
            except TimeoutError as exc:
                raise RuntimeError(
                    f"{name} did not start (log: {self.procs[name].log_path}):"
                    f"\n{self.procs[name].tail()}"
                ) from exc
        return ready

    def stop(self, name: str, timeout: float = 40.0) -> int:
        code = self.procs[name].stop(timeout)
        self.exits.append((name, code))
        return code

    def kill(self, name: str) -> int:
        """SIGKILL one process on purpose (a fault test); its exit is not judged."""
        code = self.procs[name].kill()
        self.killed.append((name, code))
        return code

    def stop_all(self, timeout: float = 40.0) -> None:
        """SIGTERM every live process at once, then wait for each (bounded), newest first."""
        live = [p for p in self.procs.values() if p.alive]
        for proc in live:
            proc.terminate()
        for proc in reversed(live):
            self.exits.append((proc.name, proc.stop(timeout)))

    def close(self) -> None:
        """Kill whatever is still running (after a failure)."""
        for proc in self.procs.values():
            if proc.alive:
                self.killed.append((proc.name, proc.kill()))
