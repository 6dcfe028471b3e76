"""The one mapping from what a command raised to its exit code and the lines it prints.

=====  =====================================================================================
exit   meaning
=====  =====================================================================================
0      done
1      the command failed: a KitError not named below (DeliveryError, a corrupt recording,
       ...), or its answer is no (``kit broker status``: not running; ``kit replay
       --shadow``: differences; ``kit schemas check``: problems; ``kit record``: stopped
       idle). ``kit run`` exits 1 when it stopped on a fatal error or past its shutdown
       deadline. Any other exception is a bug: Python's traceback, exit 1.
2      wrong usage or input: an unknown command or option, a bad value (click's usage
       error), a ConfigError, invalid input (``kit request --json``). Commands whose 1 is an
       answer (``kit broker``, ``kit replay --shadow``) exit 2 for any other KitError too.
3      RequestTimeout: no reply before the deadline
4      RemoteError: the responder raised, or its reply cannot be decoded
5      ServiceUnavailable: no live instance of the service
130    interrupted (Ctrl-C)
=====  =====================================================================================

README.md has the same table; tests/unit/test_cli_exit_codes.py checks each row.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ParamSpec

from kit.errors import ConfigError, KitError, RemoteError, RequestTimeout, ServiceUnavailable

__all__ = [
    "EXIT_CODES",
    "Exit",
    "InvalidInput",
    "Row",
    "UnreadableReply",
    "error_lines",
    "exit_code",
    "guarded",
]

P = ParamSpec("P")


class Exit(IntEnum):
    """The exit codes of every ``kit`` command."""

    OK = 0
    FAILED = 1
    USAGE = 2
    TIMEOUT = 3
    REMOTE = 4
    UNAVAILABLE = 5
    INTERRUPTED = 130


class InvalidInput(Exception):
    """What the user passed cannot be used (not JSON, not valid for its schema): exit 2."""


class UnreadableReply(Exception):
    """A reply arrived but cannot be decoded, so the responder's side is wrong: exit 4."""


@dataclass(frozen=True)
class Row:
    """One row of the mapping: an error type, its exit code, and the line printed for it.

    ``shown`` formats the line after the program name (``{0}`` is the error); None prints
    the error's own ``KitError.cli_lines()``.
    """

    error: type[BaseException]
    code: Exit
    shown: str | None


#: Most specific first: the first row whose type matches decides.
EXIT_CODES: tuple[Row, ...] = (
    Row(ConfigError, Exit.USAGE, "configuration error: {0}"),
    Row(InvalidInput, Exit.USAGE, "{0}"),
    Row(RequestTimeout, Exit.TIMEOUT, "{0}"),
    Row(RemoteError, Exit.REMOTE, "remote error: {0}"),
    Row(UnreadableReply, Exit.REMOTE, "{0}"),
    Row(ServiceUnavailable, Exit.UNAVAILABLE, "{0}"),
    Row(KitError, Exit.FAILED, None),
    Row(KeyboardInterrupt, Exit.INTERRUPTED, "interrupted"),
)


def _row(exc: BaseException) -> Row | None:
    return next((row for row in EXIT_CODES if isinstance(exc, row.error)), None)


def exit_code(exc: BaseException, *, answers: bool = False) -> int | None:
    """The exit code for ``exc``; None for an exception that is a bug.

    ``answers``: the command's exit 1 is an answer (not running, differences), so a
    failure that would exit 1 exits 2 instead, like diff(1).
    """
    row = _row(exc)
    if row is None:
        return None
    if answers and row.code is Exit.FAILED:
        return Exit.USAGE
    return int(row.code)


def error_lines(exc: BaseException, *, bare: bool = False) -> list[str]:
    """What a command prints for ``exc``, one line each (after its program name).

    ``bare``: a KitError prints its message alone (``kit broker`` does, as it always has).
    """
    row = _row(exc)
    if bare and isinstance(exc, KitError):
        return [str(exc)]
    if row is None or row.shown is None:
        return exc.cli_lines() if isinstance(exc, KitError) else [f"{type(exc).__name__}: {exc}"]
    return [row.shown.format(exc)]


def guarded(
    prog: str, *, answers: bool = False, bare: bool = False
) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a command so that what :data:`EXIT_CODES` names becomes lines and a code.

    The error's lines go to stderr after ``prog: ``; anything the table does not name
    propagates with its traceback (a bug).
    """

    def decorate(command: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return int(command(*args, **kwargs))
            except (Exception, KeyboardInterrupt) as exc:
                code = exit_code(exc, answers=answers)
                if code is None:
                    raise
                for line in error_lines(exc, bare=bare):
                    print(f"{prog}: {line}", file=sys.stderr)
                return code

        return run

    return decorate
