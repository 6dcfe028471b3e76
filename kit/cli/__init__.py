"""The ``kit`` command: one click group, one module per command group.

Each command imports what it needs when it runs, so ``kit --help`` loads none of it. Every
command turns errors into exit codes through the one table in :mod:`kit.cli.errors`.
Shell completion comes from click: ``eval "$(_KIT_COMPLETE=bash_source kit)"`` (zsh:
``zsh_source``, fish: ``fish_source``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import click

from kit.cli import (
    broker,
    catalog,
    dlt,
    publish,
    replay,
    replies,
    request,
    run,
    schema_registry,
    schemas,
    services,
    topics,
)
from kit.cli.errors import guarded
from kit.cli.options import LOG_FORMAT, LOG_LEVEL, configure_logging
from kit.errors import ConfigError

__all__ = ["cli", "main"]

# A command's log level when neither --log-level nor KIT_LOG_LEVEL sets one; the others
# leave logging as Python has it (warnings and errors only).
_DEFAULT_LEVEL = {
    "run": "INFO",
    "request": "WARNING",
    "schemas": "INFO",
    "services": "WARNING",
    "catalog": "WARNING",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kit")
    except PackageNotFoundError:  # run from a checkout that pip did not install
        from kit import __version__

        return __version__


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"kit {_version()}")
        ctx.exit()


@click.group("kit", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=LOG_LEVEL,
    default=None,
    help="DEBUG, INFO, WARNING, ... (default KIT_LOG_LEVEL, else INFO for run "
    "and schemas, WARNING for the others)",
)
@click.option(
    "--log-format",
    type=LOG_FORMAT,
    default=None,
    help="text (the default) or json: one JSON object per line (default KIT_LOG_FORMAT)",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show kit's version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Run kit services, call them, watch them; record and replay traffic; run a local Kafka.

    Exit codes: 0 done; 1 failed, or the answer is no; 2 wrong usage, input or
    configuration; 3 request timeout; 4 remote error; 5 no live instance; 130 interrupted.
    """
    code = _configure_logging(log_level, ctx.invoked_subcommand or "", log_format)
    if code:
        ctx.exit(code)


@guarded("kit")
def _configure_logging(option: str | None, command: str, log_format: str | None = None) -> int:
    """Log at --log-level, else KIT_LOG_LEVEL, else the command's default level; as
    --log-format, else KIT_LOG_FORMAT, else text.

    KIT_LOG_LEVEL and KIT_LOG_FORMAT are read here rather than by click, so that a bad
    value is a configuration error naming the variable (click would name the option).
    JSON logs are set up even for a command without a default level (at WARNING, Python's).
    """
    log_format = log_format or _env_log_format()
    level = option or _env_log_level() or _DEFAULT_LEVEL.get(command)
    if level or log_format == "json":
        configure_logging(level or "WARNING", log_format)
    return 0


def _env_log_format() -> str | None:
    from kit.logs import log_format_error

    value = os.environ.get("KIT_LOG_FORMAT", "").strip()
    if not value:
        return None
    why = log_format_error(value)
    if why:
        raise ConfigError("KIT_LOG_FORMAT", why)
    return value.lower()


def _env_log_level() -> str | None:
    value = os.environ.get("KIT_LOG_LEVEL", "").strip()
    if not value:
        return None
    if value.upper() not in logging.getLevelNamesMapping():
        levels = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ConfigError("KIT_LOG_LEVEL", f"{value!r} is not a log level ({levels})")
    return value.upper()


for _command in (
    run.run,
    request.request,
    services.services,
    catalog.catalog,
    replies.replies,
    broker.broker,
    schema_registry.schema_registry,
    replay.record,
    replay.replay,
    schemas.schemas,
    publish.publish,
    topics.topics,
    dlt.dlt,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kit ARGV...`` (default: the process's arguments) and return the exit code.

    Wrong usage prints the usage and raises SystemExit(2), as click and argparse do.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="kit", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:  # Ctrl-C while click itself was parsing
        print("kit: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
