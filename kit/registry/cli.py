"""``kit services`` as it was called before kit.cli: kept for callers of ``cli_services``.

The command lives in :mod:`kit.cli.services`, its table and JSON in :mod:`kit.registry.table`.
"""

from __future__ import annotations

from kit.registry.table import format_table, to_json

__all__ = ["cli_services", "format_table", "to_json"]


def cli_services(argv: list[str]) -> int:
    """Run ``kit services ARGV...``; return the exit code (deprecated: use kit.cli.main).

    The one import from below into kit.cli, kept until its callers call kit.cli.main.
    """
    from kit.cli import main

    return main(["services", *argv])
