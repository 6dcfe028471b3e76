"""What every kit command shares: logging set-up, and errors turned into exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from kit.errors import ConfigError, KitError

__all__ = ["configure_logging", "run_command"]


def configure_logging(level: str) -> None:
    """Log to stderr at `level` (a name such as INFO), with time, level and logger."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_command(prog: str, command: Callable[[], int], *, error_code: int = 1) -> int:
    """Run a CLI command and turn the kit's errors into one line on stderr and an exit code.

    A ConfigError exits 2, another KitError `error_code`, Ctrl-C 130; anything else is a
    bug and keeps its traceback.
    """
    try:
        return int(command())
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KitError as exc:
        for line in exc.cli_lines():
            print(f"{prog}: {line}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
