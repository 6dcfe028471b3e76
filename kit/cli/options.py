"""What several commands share: the log level and format, and options that take several values."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection
from typing import Any

import click

__all__ = ["LOG_FORMAT", "LOG_LEVEL", "VariadicOptions", "configure_logging", "given"]

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


class _LogFormat(click.ParamType):
    """A log format: text or json, any case."""

    name = "format"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from kit.logs import log_format_error

        why = log_format_error(str(value))
        if why:
            self.fail(why, param, ctx)
        return str(value).strip().lower()


LOG_FORMAT = _LogFormat()

_HANDLER = "kit.stderr"
"""The name of the stderr handler configure_logging adds to the root logger."""


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Log to stderr at ``level`` (a name such as INFO), as ``log_format``.

    ``text`` gives lines with time, level and logger; ``json`` one JSON object per line
    (kit.logs.JsonFormatter); None keeps the format an earlier call set (else text). As
    logging.basicConfig, it adds no handler where the root logger already has others.
    """
    from kit.logs import TEXT_FORMAT, JsonFormatter

    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == _HANDLER]
    if log_format is not None or not ours:
        json_lines = log_format == "json"
        formatter = JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT)
        if ours:
            ours[0].setFormatter(formatter)
        elif not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.set_name(_HANDLER)
            handler.setFormatter(formatter)
            root.addHandler(handler)
    root.setLevel(level.upper())
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
