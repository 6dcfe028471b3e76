"""What several commands share: the log level, and options that take several values."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection
from typing import Any

import click

__all__ = ["LOG_LEVEL", "VariadicOptions", "configure_logging", "given"]

# Any: every Any here is a value as click hands it over: a converter's input (command-line
# text, or a default already converted) or click.Command's own arguments, passed on as given.


class _LogLevel(click.ParamType):
    """A logging level name, any case (DEBUG, info, WARNING, ...)."""

    name = "level"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().upper()
        if text not in logging.getLevelNamesMapping():
            levels = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
            self.fail(f"{value!r} is not a log level ({levels})", param, ctx)
        return text


LOG_LEVEL = _LogLevel()


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (a name such as INFO), with time, level and logger."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level.upper())
    # the schema registry client's HTTP library logs every request at INFO: shown at DEBUG only
    http = logging.getLogger("httpx2")
    http.setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


def given(ctx: click.Context, name: str) -> bool:
    """True if the parameter ``name`` was given on the command line."""
    return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


class VariadicOptions(click.Command):
    """A command whose ``variadic`` options take every value up to the next option.

    That is argparse's ``nargs="+"`` / ``nargs="*"``, which click options lack: the
    arguments are rewritten before click parses them, ``--topic-map a=b c=d`` into
    ``--topic-map a=b --topic-map c=d``, so each such option is declared ``multiple=True``.
    A bare ``--inputs`` (no value) becomes one empty value: given, but empty.
    """

    def __init__(self, *args: Any, variadic: Collection[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.variadic = frozenset(variadic)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Spell each variadic option out once per value, then parse as click does."""
        out: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                out += [arg, *rest]
                break
            if arg not in self.variadic:
                out.append(arg)
                continue
            values = []
            while rest and not rest[0].startswith("-"):
                values.append(rest.pop(0))
            for value in values or [""]:
                out += [arg, value]
        return super().parse_args(ctx, out)
