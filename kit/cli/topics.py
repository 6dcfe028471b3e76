"""``kit topics``: the cluster's topics with their partitions and end offsets."""

from __future__ import annotations

import click

from kit.cli.errors import Exit, guarded

__all__ = ["topics"]


@click.command("topics", short_help="List topics with partitions and end offsets (--json).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--internal", is_flag=True, help="also Kafka's own __* topics")
@guarded("kit topics")
def topics(as_json: bool, internal: bool) -> int:
    """List the cluster's topics, with partitions and end offsets (records written)."""
    import json

    from kit.config import load_settings
    from kit.topics import list_topics

    found = list_topics(load_settings(), internal=internal)
    if as_json:
        rows = [
            {"topic": t.name, "partitions": t.partitions, "end_offsets": list(t.end_offsets)}
            for t in found
        ]
        print(json.dumps(rows, indent=2))
        return Exit.OK
    width = max([len("TOPIC"), *(len(t.name) for t in found)])
    print(f"{'TOPIC':<{width}}  PARTITIONS  RECORDS  END OFFSETS")
    for t in found:
        ends = ",".join(str(o) for o in t.end_offsets)
        print(f"{t.name:<{width}}  {t.partitions:>10}  {t.records:>7}  {ends}")
    return Exit.OK
