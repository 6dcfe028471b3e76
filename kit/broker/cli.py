"""``kit broker ...`` as it was called before kit.cli: kept for callers of ``local.cli_main``.

The command lives in :mod:`kit.cli.broker`.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run ``kit broker ARGV...``; return the exit code, 2 for wrong usage (deprecated: use
    kit.cli.main). The one import from below into kit.cli, kept until its callers call
    kit.cli.main."""
    from kit.cli import main as kit_main

    try:
        return kit_main(["broker", *argv])
    except SystemExit as exc:  # wrong usage: click printed it
        return exc.code if isinstance(exc.code, int) else 2
