"""Record Kafka traffic to a file and replay it: the API and the `kit record` and `replay` CLIs."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from kit.command import run_command
from kit.replay.file import (
    FORMAT_VERSION,
    Record,
    RecordingError,
    RecordingInfo,
    RecordingReader,
    RecordingWriter,
    read_schemas,
)
from kit.replay.record import Progress, RecordResult, parse_time, record
from kit.replay.replay import ReplayResult, merge_by_time, replay

__all__ = [
    "FORMAT_VERSION",
    "Progress",
    "Record",
    "RecordResult",
    "RecordingError",
    "RecordingInfo",
    "RecordingReader",
    "RecordingWriter",
    "ReplayResult",
    "cli_record",
    "cli_replay",
    "merge_by_time",
    "parse_time",
    "read_schemas",
    "record",
    "replay",
]


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _speed_arg(text: str) -> float | None:
    if text.lower() == "max":
        return None
    try:
        speed = float(text.rstrip("xX"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if speed <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return speed


def _pair_arg(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cli_record(argv: list[str]) -> int:
    """`kit record TOPIC [TOPIC...] -o FILE [--from TIME] [--to TIME] [--max N]`."""
    parser = argparse.ArgumentParser(
        prog="kit record",
        description="Record topics from a live cluster into a recording file (Avro OCF).",
        epilog="TIME is ISO-8601 (2026-01-31T12:00:00Z; naive = local time) or a duration "
        "meaning now minus it (30s, 10m, 2h, 1d). Ctrl-C stops and keeps the file valid.",
    )
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to record")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="recording file")
    parser.add_argument("--from", dest="start", type=_time_arg, metavar="TIME", help="start at")
    parser.add_argument("--to", dest="end", type=_time_arg, metavar="TIME", help="stop at")
    parser.add_argument("--max", type=_positive_int, metavar="N", help="stop after N records")
    parser.add_argument("--bootstrap", metavar="ADDR", help="source cluster (default: settings)")
    parser.add_argument("--codec", choices=["deflate", "null"], default="deflate")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if args.start and args.end and args.start >= args.end:
        parser.error("--from must be before --to")
    return run_command("kit record", lambda: _record_main(args))


def _record_main(args: argparse.Namespace) -> int:
    result = record(
        args.topics,
        args.output,
        bootstrap=args.bootstrap,
        start=args.start,
        end=args.end,
        max_records=args.max,
        codec=args.codec,
        progress=None if args.quiet else Progress("kit record"),
    )
    per = result.file_bytes / result.records if result.records else 0.0
    raw = result.raw_bytes / result.records if result.records else 0.0
    print(
        f"kit record: {result.records:,} record(s) to {result.path} in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s; {result.file_bytes:,} bytes, {per:.1f} B/record vs "
        f"{raw:.1f} B raw; {result.schemas} writer schema(s)); stopped by {result.stopped_by}",
        file=sys.stderr,
    )
    if result.unknown_fingerprints:
        print(
            "kit record: warning: no writer schema for " + ", ".join(result.unknown_fingerprints),
            file=sys.stderr,
        )
    return 1 if result.stopped_by == "idle" else 0


def cli_replay(argv: list[str]) -> int:
    """`kit replay FILE [--into BOOTSTRAP] [--topic-map OLD=NEW ...] [--speed X|max]`."""
    parser = argparse.ArgumentParser(
        prog="kit replay",
        description="Republish a recording, keeping keys, headers, values and partition order.",
    )
    parser.add_argument("file", metavar="FILE", help="recording file")
    parser.add_argument("--into", metavar="BOOTSTRAP", help="target cluster (default: settings)")
    parser.add_argument(
        "--topic-map",
        type=_pair_arg,
        nargs="+",
        action="extend",
        default=[],
        metavar="OLD=NEW",
        help="publish topic OLD's records to NEW",
    )
    parser.add_argument(
        "--speed",
        type=_speed_arg,
        default=None,
        metavar="X|max",
        help="1 keeps the original timing, 2 is twice as fast; max (default) is no pacing",
    )
    parser.add_argument(
        "--keep-timestamps", action="store_true", help="publish with the recorded timestamps"
    )
    parser.add_argument(
        "--verify", action="store_true", help="decode each value with its writer schema first"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    return run_command("kit replay", lambda: _replay_main(args))


def _replay_main(args: argparse.Namespace) -> int:
    result = replay(
        args.file,
        into=args.into,
        topic_map=dict(args.topic_map),
        speed=args.speed,
        keep_timestamps=args.keep_timestamps,
        verify=args.verify,
        progress=None if args.quiet else Progress("kit replay"),
    )
    moved = ", ".join(f"{s} -> {t}" for s, t in result.topics.items() if s != t)
    notes = [f"mapped {moved}"] if moved else []
    if result.created:
        notes.append(f"created {', '.join(result.created)}")
    if result.by_key:
        notes.append(f"partitioned by key (too few partitions): {', '.join(result.by_key)}")
    print(
        f"kit replay: {result.published:,} record(s) published from {result.path} "
        f"in {result.seconds:.1f}s ({result.rate:,.0f}/s)" + "".join(f"; {n}" for n in notes),
        file=sys.stderr,
    )
    if result.interrupted:
        print("kit replay: interrupted before the end of the recording", file=sys.stderr)
        return 130
    return 0
