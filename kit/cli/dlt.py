"""``kit dlt list | show TOPIC | redrive TOPIC``: dead-letter topics, their records, redrive."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kit.cli.errors import Exit, guarded

__all__ = ["dlt"]

# Any: every Any here is a value as click hands it over: a converter's input (command-line
# text, or a default already converted).


class _Where(click.ParamType):
    """KEY=VALUE[,VALUE...], checked as it is parsed (exit 2 for a wrong one)."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from kit.dlt.letters import parse_where

        try:
            parse_where([str(value)])
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


_WHERE_HELP = (
    "only dead letters with KEY=VALUE (several values: a,b); KEY is reason (decode, handler, "
    "delivery), exception, topic (original), service, group or handler; repeat to AND"
)


_TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="deadline in seconds of each read of a topic to its end",
)


@click.group(
    "dlt", short_help="Dead letters: kit dlt list | show TOPIC | redrive TOPIC [--dry-run]."
)
def dlt() -> None:
    """Dead-letter topics (those ending in KIT_DEAD_LETTER_SUFFIX, default .dlt): count
    their records by reason, show them, and republish them to their original topics."""


@dlt.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_TIMEOUT
@guarded("kit dlt list")
def list_topics(as_json: bool, timeout: float) -> int:
    """Each dead-letter topic with its records counted by reason."""
    from kit.config import load_settings
    from kit.dlt import dead_letter_counts
    from kit.dlt.report import counts_json, counts_table

    rows = dead_letter_counts(load_settings(), timeout=timeout)
    print(json.dumps(counts_json(rows), indent=2) if as_json else counts_table(rows))
    return Exit.OK


@dlt.command("show")
@click.argument("topic")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="the N newest"
)
@click.option("--where", multiple=True, type=_Where(), help=_WHERE_HELP)
@click.option("--json", "as_json", is_flag=True, help="one JSON document per dead letter")
@_TIMEOUT
@guarded("kit dlt show")
def show(topic: str, limit: int, where: tuple[str, ...], as_json: bool, timeout: float) -> int:
    """The newest dead letters of TOPIC: when and why each failed, where it came from, and
    its value decoded with its writer schema where possible."""
    from kit.config import load_settings
    from kit.dlt import parse_where
    from kit.dlt import show as show_letters
    from kit.dlt.report import letter_json, letter_lines

    wanted = parse_where(where)
    shown, matched = show_letters(
        load_settings(), topic, limit=limit, where=wanted, timeout=timeout
    )
    for n, item in enumerate(shown):
        if as_json:
            print(json.dumps(letter_json(item.letter, item.value, item.error)))
        else:
            print(
                ("\n" if n else "") + "\n".join(letter_lines(item.letter, item.value, item.error))
            )
    which = f" matching {wanted}" if where else ""
    print(
        f"kit dlt show: {len(shown)} of {matched} dead letter(s){which} in {topic}", file=sys.stderr
    )
    return Exit.OK


@dlt.command(
    "redrive",
    epilog="Each record goes back with its key, value and own headers (the kit-dlt-* ones "
    "dropped) and kit-redriven-from = DLT/PARTITION/OFFSET. A dead letter whose marker is "
    "already in the target topic is left out, so running it again sends nothing twice.",
)
@click.argument("topic")
@click.option("--where", multiple=True, type=_Where(), help=_WHERE_HELP)
@click.option(
    "--to",
    metavar="TOPIC",
    default=None,
    help="republish there (default: each record's kit-dlt-original-topic)",
)
@click.option("--dry-run", is_flag=True, help="list what would be sent; send nothing")
@_TIMEOUT
@guarded("kit dlt redrive")
def redrive(
    topic: str, where: tuple[str, ...], to: str | None, dry_run: bool, timeout: float
) -> int:
    """Republish the dead letters of TOPIC to their original topic, once each."""
    from kit.config import load_settings
    from kit.dlt import parse_where
    from kit.dlt import redrive as redrive_letters
    from kit.dlt.report import redrive_lines
    from kit.errors import DeliveryError

    if to == topic:
        raise click.UsageError("--to cannot be the dead-letter topic itself")
    result = redrive_letters(
        load_settings(), topic, where=parse_where(where), to=to, dry_run=dry_run, timeout=timeout
    )
    for line in redrive_lines(result.plan, result.delivered):
        print(line)
    if not result.ok:
        first = f"; first error: {result.failed[0][1]}" if result.failed else ""
        raise DeliveryError(
            f"{len(result.failed)} failed, {result.unconfirmed} unconfirmed and "
            f"{result.unsent} unsent of {len(result.plan.chosen)} record(s){first}. What was "
            "delivered carries its marker: run the command again to redrive the rest"
        )
    return Exit.OK
