"""``kit replies prune``: delete the reply topics of requesters that are gone."""

from __future__ import annotations

import click

from kit.cli.errors import Exit, guarded

__all__ = ["replies"]


@click.group("replies", short_help="Delete reply topics of dead requesters: kit replies prune.")
def replies() -> None:
    """Reply topics of requesters: kit replies prune."""


@replies.command("prune")
@click.option(
    "--idle", type=float, default=3600.0, show_default=True, help="seconds without replies"
)
@click.option("--dry-run", is_flag=True, help="list, do not delete")
@guarded("kit replies")
def prune(idle: float, dry_run: bool) -> int:
    """Delete reply topics of requesters that are gone (in no consumer group, idle)."""
    from kit.config import load_settings
    from kit.replies import prune_reply_topics

    stale = prune_reply_topics(load_settings(), idle=idle, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for topic in stale:
        print(f"{verb} {topic}")
    print(f"{len(stale)} stale reply topic(s) {verb}")
    return Exit.OK
