"""A dedicated local broker for one test (own data dir and port), stopped and started at will.

The session broker other tests share is never touched: `kit broker start|stop` runs with
KIT_BROKER_DIR and KIT_BROKER_PORT of this broker only. A stop is Kafka's controlled
shutdown (SIGTERM, `kit broker stop`); a start reuses the same data, so topics, records and
committed offsets survive the outage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kit.broker.process import free_port
from tests.fault.instances import ROOT

__all__ = ["DedicatedBroker", "free_port_pair"]


def free_port_pair() -> int:
    """A port p such that p and p+1 (the broker's controller port) are both free (below
    the ephemeral range: no connection takes one while the broker starts)."""
    return free_port(2)


class DedicatedBroker:
    """A single-node Kafka in `data_dir`, on a free port, driven through `kit broker`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port_pair()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.running = False

    def _kit_broker(self, command: str, timeout: float) -> float:
        env = {"KIT_BROKER_DIR": str(self.data_dir), "KIT_BROKER_PORT": str(self.port)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "kit.cli", "broker", command],
            cwd=ROOT,
            env={**_environ(), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"kit broker {command}: {done.stdout}{done.stderr}"
        return time.monotonic() - started

    def start(self, timeout: float = 150.0) -> float:
        """Start (or restart) the broker; returns the seconds it took to answer."""
        seconds = self._kit_broker("start", timeout)
        self.running = True
        return seconds

    def stop(self, timeout: float = 60.0) -> float:
        """Stop the broker (controlled shutdown); returns the seconds it took."""
        seconds = self._kit_broker("stop", timeout)
        self.running = False
        return seconds

    def close(self) -> None:
        if self.running:
            self.stop()


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("KIT_BROKER_DIR", "KIT_BROKER_PORT")}
