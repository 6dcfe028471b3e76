"""Record Kafka traffic to a file and replay it (the `kit record` and `kit replay` commands)."""

from __future__ import annotations

from kit.replay.file import (
    Record,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    read_schemas,
)
from kit.replay.format import FORMAT_VERSION, RecordingInfo
from kit.replay.record import RecordResult, parse_time, record
from kit.replay.replay import ReplayResult, merge_by_time, replay
from kit.replay.terminal import Progress

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
    "merge_by_time",
    "parse_time",
    "read_schemas",
    "record",
    "replay",
]
