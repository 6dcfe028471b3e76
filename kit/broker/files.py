"""The local broker's data dir and the files a node keeps in it: pid, state, log, properties."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kit.config import load_tool_settings

__all__ = [
    "broker_dir",
    "forget",
    "log_file",
    "pid_file",
    "read_pid",
    "read_state",
    "state_file",
    "tail",
    "write_private",
]


def broker_dir() -> Path:
    """Return the broker's data and state folder: ``KIT_BROKER_DIR`` or ``~/.cache/kit/broker``."""
    value = load_tool_settings().broker_dir
    path = value.expanduser() if value else Path.home() / ".cache" / "kit" / "broker"
    return path.resolve()


def pid_file(node_dir: Path, name: str = "broker") -> Path:
    """The file holding the pid of the node's JVM while it runs (``<name>.pid``; the local
    schema registry's is ``registry.pid``)."""
    return node_dir / f"{name}.pid"


def state_file(data_dir: Path) -> Path:
    """The file written once the broker (or the whole cluster) answers: address, ports, version."""
    return data_dir / "state.json"


def log_file(node_dir: Path, name: str = "broker") -> Path:
    """The node's stdout and stderr (log4j writes to stdout): ``<name>.log``."""
    return node_dir / f"{name}.log"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)
        handle.write(text)


def read_pid(node_dir: Path, name: str = "broker") -> int | None:
    """The pid the node's pid file names, or None."""
    try:
        return int(pid_file(node_dir, name).read_text().strip())
    except (OSError, ValueError):
        return None


def read_state(data_dir: Path) -> dict[str, Any] | None:  # Any: JSON values
    """The state file's content, or None if it is missing or unreadable."""
    try:
        state = json.loads(state_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def forget(data_dir: Path, pid: int | None, name: str = "broker") -> None:
    """Remove the pid and state files, but only if they still describe ``pid``."""
    if read_pid(data_dir, name) in (pid, None):
        pid_file(data_dir, name).unlink(missing_ok=True)
        state_file(data_dir).unlink(missing_ok=True)


def tail(path: Path, lines: int = 20, what: str = "broker") -> str:
    """The last ``lines`` lines of a ``what`` log, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {what} log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or f"({what} log is empty)"
