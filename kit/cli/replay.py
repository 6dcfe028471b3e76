"""``kit record``, ``kit replay`` and ``kit replay --shadow``: recordings of Kafka traffic."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from kit.cli.errors import Exit, guarded
from kit.cli.options import VariadicOptions, given

if TYPE_CHECKING:
    from kit.replay.replay import ReplayResult

__all__ = ["record", "replay"]

# Any: every Any here is a value as click hands it over: a converter's input (command-line
# text, or a default already converted) or a command's parsed options.


class _Time(click.ParamType):
    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        from kit.replay.record import parse_time

        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Speed(click.ParamType):
    """A positive number (``2``, ``2x``), or ``max`` (None: no pacing)."""

    name = "X|max"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | None:
        text = str(value)
        if text.lower() == "max":
            return None
        try:
            speed = float(text.rstrip("xX"))
        except ValueError:
            self.fail(f"expected a number or 'max', got {text!r}", param, ctx)
        if speed <= 0:
            self.fail(f"must be positive, got {text!r}", param, ctx)
        return speed


class _Pair(click.ParamType):
    name = "OLD=NEW"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        old, sep, new = str(value).partition("=")
        if not sep or not old or not new:
            self.fail(f"expected OLD=NEW, got {value!r}", param, ctx)
        return old, new


class _Count(click.ParamType):
    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            count = int(value)
        except ValueError:
            self.fail(f"expected a whole number, got {value!r}", param, ctx)
        if count < 1:
            self.fail(f"must be at least 1, got {count}", param, ctx)
        return count


@click.command(
    "record",
    short_help="Record topics to a file: kit record TOPIC... -o FILE.",
    epilog="TIME is ISO-8601 (2026-01-31T12:00:00Z; naive = local time) or a duration "
    "meaning now minus it (30s, 10m, 2h, 1d). Ctrl-C stops and keeps the file valid.",
)
@click.argument("topics", nargs=-1, required=True, metavar="TOPIC...")
@click.option("-o", "--output", required=True, metavar="FILE", help="recording file")
@click.option("--from", "start", type=_Time(), default=None, help="start at")
@click.option("--to", "end", type=_Time(), default=None, help="stop at")
@click.option("--max", "max_records", type=_Count(), default=None, help="stop after N records")
@click.option(
    "--bootstrap", metavar="ADDR", default=None, help="source cluster (default: settings)"
)
@click.option(
    "--codec", type=click.Choice(["deflate", "null"]), default="deflate", show_default=True
)
@click.option(
    "--registry",
    metavar="URL",
    default=None,
    help="schema registry of registry-framed values (default: KIT_SCHEMA_REGISTRY_URL)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress line")
@guarded("kit record")
def record(
    topics: tuple[str, ...],
    output: str,
    start: datetime | None,
    end: datetime | None,
    max_records: int | None,
    bootstrap: str | None,
    codec: str,
    registry: str | None,
    quiet: bool,
) -> int:
    """Record topics from a live cluster into a recording file (Avro OCF).

    The file carries the writer schema of every value; for registry-framed values also
    their ids, with the schemas looked up in the schema registry (--registry).
    Exit 0 when done (also after Ctrl-C), 1 when it stopped for lack of records.
    """
    from kit.replay.record import record as record_topics
    from kit.replay.terminal import Progress

    if start and end and start >= end:
        raise click.UsageError("--from must be before --to", ctx=click.get_current_context())
    result = record_topics(
        list(topics),
        output,
        bootstrap=bootstrap,
        start=start,
        end=end,
        max_records=max_records,
        codec=codec,
        progress=None if quiet else Progress("kit record"),
        registry=registry,
    )
    per = result.file_bytes / result.records if result.records else 0.0
    raw = result.raw_bytes / result.records if result.records else 0.0
    print(
        f"kit record: {result.records:,} record(s) to {result.path} in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s; {result.file_bytes:,} bytes, {per:.1f} B/record vs "
        f"{raw:.1f} B raw; {result.schemas} writer schema(s)); stopped by {result.stopped_by}",
        file=sys.stderr,
    )
    unknown = list(result.unknown_fingerprints)
    unknown += [f"schema id {i}" for i in result.unknown_schema_ids]
    if unknown:  # each id's reason (not in the registry, not Avro, ...) was logged as met
        print(
            "kit record: warning: no usable writer schema for " + ", ".join(unknown),
            file=sys.stderr,
        )
    return Exit.FAILED if result.stopped_by == "idle" else Exit.OK


_REPLAY_ONLY = (
    "into",
    "topic_map",
    "only",
    "into_original_topics",
    "speed",
    "keep_timestamps",
    "verify",
    "registry",
    "quiet",
)
_SHADOW_ONLY = ("inputs", "outputs", "ignore")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class _ReplayCommand(VariadicOptions):
    """`kit replay`: VariadicOptions, and --shadow takes every MODULE:SERVICE that follows.

    ``--shadow a:service b:service FILE`` becomes ``--shadow a:service --shadow b:service
    FILE``: a value that does not look like MODULE:ATTRIBUTE (the file) ends the list.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Spell --shadow out once per target, then parse as VariadicOptions does."""
        out: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            out.append(arg)
            if arg == "--":
                out += rest
                break
            if arg == "--shadow" and rest:
                out.append(rest.pop(0))
                while rest and _TARGET.fullmatch(rest[0]):
                    out += ["--shadow", rest.pop(0)]
        return super().parse_args(ctx, out)


@click.command(
    "replay",
    short_help="Republish a recording (kit replay FILE) or diff a new version (--shadow).",
    cls=_ReplayCommand,
    variadic=("--topic-map", "--only", "--inputs", "--outputs"),
    epilog="Every replayed topic needs a --topic-map entry unless --into-original-topics "
    "says to publish into the topics it was recorded from (running services would handle "
    "those records again); --only picks the topics to replay. With --shadow MODULE:SERVICE "
    "[MODULE:SERVICE...], nothing is published: the recording's inputs run through those "
    "services in-process (together, so that they answer each other's requests) and their "
    "outputs are compared with the recorded ones (exit 0 the same, 1 differences, "
    "2 trouble). See docs/replay.md.",
)
@click.argument("file", metavar="FILE")
@click.option(
    "--into", metavar="BOOTSTRAP", default=None, help="target cluster (default: settings)"
)
@click.option(
    "--topic-map",
    type=_Pair(),
    multiple=True,
    help="publish topic OLD's records to NEW (OLD=NEW ...)",
)
@click.option(
    "--only",
    multiple=True,
    metavar="TOPIC ...",
    help="replay only these recorded topics (default: all)",
)
@click.option(
    "--into-original-topics",
    is_flag=True,
    help="publish topics without a --topic-map entry into the topics they were recorded from",
)
@click.option(
    "--speed",
    type=_Speed(),
    default=None,
    metavar="X|max",
    help="1 keeps the original timing, 2 is twice as fast; max (default) is no pacing",
)
@click.option("--keep-timestamps", is_flag=True, help="publish with the recorded timestamps")
@click.option("--verify", is_flag=True, help="decode each value with its writer schema first")
@click.option(
    "--registry",
    metavar="URL",
    default=None,
    help="target schema registry for registry-framed values (default: KIT_SCHEMA_REGISTRY_URL)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress line")
@click.option(
    "--shadow",
    metavar="MODULE:SERVICE",
    multiple=True,
    help="diff a new version instead of publishing; several (a service with the services "
    "it calls) run together",
)
@click.option(
    "--inputs",
    multiple=True,
    metavar="TOPIC ...",
    help="--shadow: input topics (default: those consumed)",
)
@click.option(
    "--outputs",
    multiple=True,
    metavar="TOPIC ...",
    help="--shadow: output topics (default: those the services publish to)",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="FIELD_PATH",
    help="--shadow: leave a field out of the comparison (issued_at, lines[*].sku, "
    "TOPIC:PATH; repeatable)",
)
@click.pass_context
def replay(ctx: click.Context, /, file: str, shadow: tuple[str, ...], **options: Any) -> int:
    """Republish a recording, keeping keys, headers, values and partition order."""
    if shadow:
        wrong = [name for name in _REPLAY_ONLY if given(ctx, name)]
        if wrong:
            option = wrong[0].replace("_", "-")
            raise click.UsageError(f"--{option} cannot be used with --shadow", ctx=ctx)
        inputs, outputs = _topics(options["inputs"]), _topics(options["outputs"])
        return _shadow(list(shadow), file, inputs, outputs, list(options["ignore"]))
    wrong = [name for name in _SHADOW_ONLY if given(ctx, name)]
    if wrong:
        raise click.UsageError(f"--{wrong[0]} needs --shadow", ctx=ctx)
    return _replay(file, **{name: options[name] for name in _REPLAY_ONLY})


def _topics(values: tuple[str, ...]) -> list[str] | None:
    """A variadic option's topics: None when not given, maybe empty when given bare."""
    return [v for v in values if v] if values else None


@guarded("kit replay")
def _replay(
    file: str,
    *,
    into: str | None,
    topic_map: tuple[tuple[str, str], ...],
    only: tuple[str, ...],
    into_original_topics: bool,
    speed: float | None,
    keep_timestamps: bool,
    verify: bool,
    registry: str | None,
    quiet: bool,
) -> int:
    from kit.replay.replay import replay as replay_file
    from kit.replay.terminal import Progress

    result = replay_file(
        file,
        into=into,
        topic_map=dict(topic_map),
        only=_topics(only),
        into_original_topics=into_original_topics,
        speed=speed,
        keep_timestamps=keep_timestamps,
        verify=verify,
        progress=None if quiet else Progress("kit replay"),
        registry=registry,
    )
    for line in _summary(result):
        print(f"kit replay: {line}", file=sys.stderr)
    if result.interrupted:
        print("kit replay: interrupted before the end of the recording", file=sys.stderr)
        return Exit.INTERRUPTED
    return Exit.OK


def _summary(result: ReplayResult) -> list[str]:
    """What a replay published: a head line, then each target topic with its count."""
    lines = [
        f"{result.published:,} record(s) published from {result.path} "
        f"in {result.seconds:.1f}s ({result.rate:,.0f}/s)"
    ]
    for source, target in sorted(result.topics.items(), key=lambda item: item[1]):
        notes = [f"from {source}, its original topic" if source == target else f"from {source}"]
        notes += ["created"] if target in result.created else []
        notes += ["by key: fewer partitions"] if target in result.by_key else []
        lines.append(f"  {target}: {result.counts.get(target, 0):,} ({'; '.join(notes)})")
    if result.skipped:
        lines.append(f"{result.skipped:,} record(s) of other topics not replayed (--only)")
    if result.reframed:
        ids = ", ".join(f"{a} -> {b}" for a, b in sorted(result.schema_ids.items()))
        lines.append(
            f"{result.reframed:,} registry-framed value(s) given the target registry's "
            f"schema ids ({ids})"
        )
    return lines


# like diff(1): 0 the same, 1 differences, 2 trouble
@guarded("kit replay --shadow", answers=True)
def _shadow(
    targets: list[str],
    file: str,
    inputs: list[str] | None,
    outputs: list[str] | None,
    ignore: list[str],
) -> int:
    import asyncio

    from kit.loading import load_service
    from kit.replay.shadow import shadow

    services = [load_service(target) for target in targets]
    report = asyncio.run(shadow(services, file, inputs=inputs, outputs=outputs, ignore=ignore))
    print(report)
    return Exit.OK if report.ok else Exit.FAILED
