"""Shadow replay: run a recording's inputs through a new service version and diff its outputs."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.codec import Codec
from kit.errors import DecodeError, KitError
from kit.jsonavro import to_json
from kit.replay.file import RecordingReader
from kit.service import Service

__all__ = ["Difference", "FieldChange", "ShadowReport", "field_changes", "shadow"]


# Any: every Any here is a decoded value: Avro data (dicts, lists, scalars), or the raw bytes
# of a value that could not be decoded.


@dataclass(frozen=True)
class FieldChange:
    """One field whose value differs: its path (`lines[0].sku`), and both values."""

    path: str
    recorded: Any
    shadow: Any


@dataclass(frozen=True)
class Difference:
    """An output that is missing, extra, or changed (with the fields that changed)."""

    kind: str
    topic: str
    key: bytes | None
    index: int
    """Position among the outputs with this topic and key."""
    recorded: Any = None
    shadow: Any = None
    changes: tuple[FieldChange, ...] = ()

    def __str__(self) -> str:
        where = f"{self.topic} key={_show_key(self.key)} #{self.index}"
        if self.kind == "changed":
            fields = "; ".join(f"{c.path}: {c.recorded!r} -> {c.shadow!r}" for c in self.changes)
            return f"changed {where}: {fields}"
        value = self.recorded if self.kind == "missing" else self.shadow
        return f"{self.kind} {where}: {json.dumps(to_json(value), default=str)[:200]}"


@dataclass
class ShadowReport:
    """What a shadow replay found."""

    inputs: int
    recorded_outputs: int
    shadow_outputs: int
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the new version emitted exactly what the recording holds."""
        return not self.differences

    def __str__(self) -> str:
        head = (
            f"shadow replay: {self.inputs} inputs, {self.recorded_outputs} recorded outputs, "
            f"{self.shadow_outputs} shadow outputs, {len(self.differences)} difference(s)"
        )
        return "\n".join([head, *(f"  {d}" for d in self.differences)])


async def shadow(
    services: Service | Sequence[Service],
    recording: Path | str,
    *,
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
) -> ShadowReport:
    """Replay a recording's input topics through `services` in-process; diff the outputs.

    `inputs` defaults to the recorded topics the services consume; `outputs` to every
    other recorded topic. Outputs are matched by topic and key, in order.
    """
    from kit.testing.harness import Harness

    svcs = [services] if isinstance(services, Service) else list(services)
    with RecordingReader(recording) as reader:
        records = [rec for _i, rec in reader]
        schemas = dict(reader.schemas)
    recorded_topics = {r.topic for r in records}
    consumed = {t for s in svcs for t in s.topics()}
    input_topics = set(inputs) if inputs is not None else recorded_topics & consumed
    if not input_topics:
        raise KitError(f"{recording}: none of the services' topics {sorted(consumed)} is recorded")
    output_topics = set(outputs) if outputs is not None else recorded_topics - input_topics
    harness = Harness(*svcs)
    fed = harness.feed_records(records, schemas, input_topics)
    await harness.run()
    codec = harness.codec
    recorded = [(r.topic, r.key, r.value) for r in records if r.topic in output_topics]
    produced = [(o.topic, o.key, o.value) for o in harness.outputs if o.topic in output_topics]
    report = ShadowReport(fed, len(recorded), len(produced))
    report.differences = _diff(recorded, produced, codec)
    return report


def _diff(
    recorded: list[tuple[str, bytes | None, bytes | None]],
    produced: list[tuple[str, bytes | None, bytes | None]],
    codec: Codec,
) -> list[Difference]:
    def group(
        items: list[tuple[str, bytes | None, bytes | None]],
    ) -> dict[tuple[str, bytes | None], list[Any]]:
        out: dict[tuple[str, bytes | None], list[Any]] = defaultdict(list)
        for topic, key, value in items:
            out[(topic, key)].append(_decode(value, codec))
        return out

    left, right = group(recorded), group(produced)
    found: list[Difference] = []
    for topic, key in sorted(set(left) | set(right), key=lambda k: (k[0], k[1] or b"")):
        a, b = left.get((topic, key), []), right.get((topic, key), [])
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                found.append(Difference("missing", topic, key, i, recorded=a[i]))
            elif i >= len(a):
                found.append(Difference("extra", topic, key, i, shadow=b[i]))
            else:
                changes = tuple(field_changes(a[i], b[i], ""))
                if changes:
                    found.append(Difference("changed", topic, key, i, a[i], b[i], changes))
    return found


def _decode(value: bytes | None, codec: Codec) -> Any:
    """A value as plain data via its writer schema; raw bytes if it is not decodable."""
    try:
        return codec.decode_any(value)
    except DecodeError:
        return value


def field_changes(a: Any, b: Any, path: str = "") -> Iterable[FieldChange]:
    """Where two decoded values differ, field by field (`lines[0].sku`), recursively."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{name}" if path else name
            if name not in a or name not in b:
                yield FieldChange(sub, a.get(name), b.get(name))
            else:
                yield from field_changes(a[name], b[name], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from field_changes(x, y, f"{path}[{i}]")
    elif a != b:
        yield FieldChange(path or "$", a, b)


def _show_key(key: bytes | None) -> str:
    if key is None:
        return "null"
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key.hex()
