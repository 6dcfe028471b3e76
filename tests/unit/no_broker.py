"""Helpers of the broker-less tests of issue 11, point 5: a closed port, `kit` as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port nobody listens on: bound by the OS, then closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_kit(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], float]:
    """Run `kit ARGS` as a user would, with only the KIT_* variables given; return its exit
    code, every line it printed (stdout and stderr together) and how long it took."""
    return run_python(tmp_path, "-m", "kit.cli", *args, **env)


def run_python(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], float]:
    """`python ARGS`, as run_kit runs `python -m kit.cli`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    base.update({"PYTHONPATH": str(ROOT), "KIT_BROKER_DIR": str(tmp_path / "broker")})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, *args],
        env={**base, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.splitlines(), time.monotonic() - started


def librdkafka_lines(output: str, port: int) -> list[str]:
    """librdkafka's own stderr lines (``%3|...``) about ``port`` in captured output (other
    tests' clients may still be talking on the same file descriptors)."""
    return [
        line for line in output.splitlines() if line.startswith("%") and f"127.0.0.1:{port}" in line
    ]
