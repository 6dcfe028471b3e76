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
from kit.replay.replay import (
    OriginalTopicsRefused,
    ReplayResult,
    choose_targets,
    merge_by_time,
    replay,
)
from kit.replay.terminal import Progress

__all__ = [
    "FORMAT_VERSION",
    "OriginalTopicsRefused",
    "Progress",
    "Record",
    "RecordResult",
    "RecordingError",
    "RecordingInfo",
    "RecordingReader",
    "RecordingWriter",
    "ReplayResult",
    "choose_targets",
    "merge_by_time",
    "parse_time",
    "read_schemas",
    "record",
    "replay",
]
