"""Shadow replay: run a recording's inputs through a new service version and diff its outputs.

Which recorded topics are compared, by default (``outputs=None``):

- **inputs** are the recorded topics the services consume, except those the services
  publish to themselves in the shadow run (a request one shadowed service sends another,
  an event one of them hands the next): those are outputs, and feeding their recorded
  records as well would handle them twice. The run is repeated without them.
- **outputs** are what the shadowed services produce, as far as it can be known:
  the topics the shadow run published to that the recording holds, the dead-letter
  topics the shadow run wrote, and every recorded topic holding a dead letter whose
  ``kit-dlt-service`` header names a shadowed service. A record does not say which service
  produced it, so a recorded topic the shadow run never published to is listed as not
  compared rather than reported missing; ``outputs`` names topics to compare explicitly.
- On a compared topic, recorded liveness marks (``kit-marker``) and dead letters of
  other services are left out. Requests to a service outside the group cannot be answered
  in-process: their topics are named in ``unanswered`` and not compared.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kit.codec import Codec
from kit.config import Settings, load_settings
from kit.errors import ConfigError, DecodeError, KitError
from kit.jsonavro import to_json
from kit.protocol import MARKER, METHOD, REPLY_TOPIC_PREFIX
from kit.replay.file import Record, RecordingReader
from kit.schema import Schema
from kit.service import Service

if TYPE_CHECKING:
    from kit.testing.harness import Emitted, Harness

__all__ = [
    "Difference",
    "FieldChange",
    "IgnoreRules",
    "ShadowReport",
    "field_changes",
    "shadow",
]


# Any: every Any here is a decoded value: Avro data (dicts, lists, scalars), or the raw bytes
# of a value that could not be decoded.

DLT_SERVICE = "kit-dlt-service"
DLT_TYPE = "kit-dlt-exception-type"
DLT_MESSAGE = "kit-dlt-exception-message"


@dataclass(frozen=True)
class FieldChange:
    """One field whose value differs: its path (`lines[0].sku`), and both values."""

    path: str
    recorded: Any
    shadow: Any

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.recorded)} -> {_show(self.shadow)}"


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
    note: str = ""
    """For a dead letter: why (the exception type and message)."""

    def __str__(self) -> str:
        where = f"{self.topic} key={_show_key(self.key)} #{self.index}"
        where += f" ({self.note})" if self.note else ""
        if self.kind == "changed":
            return f"changed {where}: {'; '.join(str(c) for c in self.changes)}"
        value = self.recorded if self.kind == "missing" else self.shadow
        return f"{self.kind} {where}: {_show(value)}"


@dataclass
class ShadowReport:
    """What a shadow replay found; `ok` when the outputs are the recorded ones.

    `compared` are the output topics compared, `not_compared` the other recorded topics
    that are no input, `not_recorded` the topics the shadow run published to that the
    recording lacks. `dead_letters` counts the shadow run's dead letters by exception
    type; `unanswered` names request topics no shadowed service answers (`callees`: the
    services they belong to); `ignored` counts the field changes `ignore` left out.
    """

    inputs: int
    recorded_outputs: int
    shadow_outputs: int
    differences: list[Difference] = field(default_factory=list)
    input_topics: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)
    not_recorded: list[str] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    recorded_dead_letters: int = 0
    unanswered: list[str] = field(default_factory=list)
    callees: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    ignored: int = 0

    @property
    def ok(self) -> bool:
        """True when the new version emitted exactly what the recording holds."""
        return not self.differences

    def __str__(self) -> str:
        dead = sum(self.dead_letters.values())
        lines = [
            f"shadow replay: {self.inputs} inputs, {self.recorded_outputs} recorded outputs, "
            f"{self.shadow_outputs} shadow outputs, {dead} dead letter(s) "
            f"({self.recorded_dead_letters} recorded), {len(self.differences)} difference(s)"
        ]
        unlisted = " (no shadowed service published there; --outputs TOPIC... compares them)"
        for label, topics, why in (
            ("inputs", self.input_topics, ""),
            ("compared", self.compared, ""),
            ("not compared", self.not_compared, unlisted),
            ("not recorded", self.not_recorded, " (published by the shadow run)"),
        ):
            if topics:
                lines.append(f"  {label}: {', '.join(topics)}{why}")
        if dead:
            counts = ", ".join(f"{kind} {n}" for kind, n in sorted(self.dead_letters.items()))
            lines.append(f"  dead letters: {counts}")
        for topic in self.unanswered:
            lines.append(
                f"  no shadowed service answers {topic}: shadow {' and '.join(self.callees)} "
                f"together with {' and '.join(self.services)} (--shadow MODULE:SERVICE for "
                "each, in one run)"
            )
        if self.ignored:
            lines.append(f"  {self.ignored} change(s) ignored ({', '.join(self.ignore)})")
        return "\n".join([*lines, *(f"  {d}" for d in self.differences)])


class IgnoreRules:
    """Field paths to leave out of the comparison (``--ignore``).

    A path names a field as the report does (`issued_at`, `lines[0].sku`) and covers
    everything under it; `[*]` stands for any index and `*` for any one field name
    (`lines[*].sku`, `*.trace_id`). `TOPIC:PATH` limits a path to one topic.
    """

    _NAME = r"[^.\[\]:*]+"
    _SHAPE = re.compile(rf"(\*|{_NAME})(\[(\*|\d+)\])*(\.(\*|{_NAME})(\[(\*|\d+)\])*)*")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = list(patterns)
        self._rules: list[tuple[str | None, re.Pattern[str]]] = []
        for pattern in self.patterns:
            topic, sep, path = pattern.rpartition(":")
            if not self._SHAPE.fullmatch(path) or (sep and not topic):
                raise ConfigError(
                    "--ignore",
                    f"{pattern!r} is no field path (issued_at, lines[*].sku, *.trace_id, "
                    "or TOPIC:PATH)",
                )
            regex = "".join(
                {"[*]": r"\[\d+\]", "*": self._NAME}.get(token, re.escape(token))
                for token in re.findall(r"\[\*\]|\*|[^*\[]+|\[", path)
            )
            self._rules.append((topic or None, re.compile(regex + r"(?:[.\[].*)?")))

    def covers(self, topic: str, path: str) -> bool:
        """Whether the field at `path` of an output on `topic` is ignored."""
        return any((t is None or t == topic) and rx.fullmatch(path) for t, rx in self._rules)


class _Out(NamedTuple):
    """One output on either side: where it went, its bytes, and a dead letter's reason."""

    topic: str
    key: bytes | None
    value: bytes | None
    note: str


async def shadow(
    services: Service | Sequence[Service],
    recording: Path | str,
    *,
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> ShadowReport:
    """Replay a recording's inputs through `services` in-process; diff their outputs.

    The services run together in one Harness, which answers their requests to each
    other: shadow a service with the services it calls. `inputs` and `outputs` default
    as the module's docstring says. Outputs are matched by topic and key, in order;
    `ignore` names field paths left out of the comparison (IgnoreRules).
    """
    svcs = [services] if isinstance(services, Service) else list(services)
    rules = IgnoreRules(ignore)
    with RecordingReader(recording) as reader:
        records = [rec for _i, rec in reader]
        schemas = dict(reader.schemas)
        recorded_topics = set(reader.info.topics) | {r.topic for r in records}
    consumed = {t for s in svcs for t in s.topics()}
    input_topics = set(inputs) if inputs is not None else recorded_topics & consumed
    if not input_topics:
        raise KitError(f"{recording}: none of the services' topics {sorted(consumed)} is recorded")
    harness, fed, input_topics = await _run(
        svcs, records, schemas, input_topics, fixed=inputs is not None
    )
    group = {s.name for s in svcs}
    produced = [o for o in harness.outputs if o.topic not in input_topics]
    unanswered, callees = _unanswered(produced, svcs)
    if outputs is not None:
        output_topics = set(outputs)
    else:
        published = {o.topic for o in produced}
        dead = {o.topic for o in produced if DLT_TYPE in o.headers}
        owned = {r.topic for r in records if _header(r.headers, DLT_SERVICE) in group}
        output_topics = ((published & recorded_topics) | dead | owned) - input_topics
        output_topics -= set(unanswered)
    recorded = [_recorded(r) for r in records if r.topic in output_topics and _ours(r, group)]
    shadowed = [_emitted(o) for o in produced if o.topic in output_topics]
    report = ShadowReport(fed, len(recorded), len(shadowed))
    report.differences, report.ignored = _diff(recorded, shadowed, harness.codec, rules)
    report.input_topics = sorted(input_topics)
    report.compared = sorted(output_topics)
    report.not_compared = sorted(recorded_topics - input_topics - output_topics)
    report.not_recorded = sorted(
        t
        for t in {o.topic for o in produced} - recorded_topics - output_topics
        if not t.startswith(REPLY_TOPIC_PREFIX)  # replies between the shadowed services
    )
    kinds = [o.headers[DLT_TYPE].decode() for o in produced if DLT_TYPE in o.headers]
    report.dead_letters = dict(Counter(kinds))
    report.recorded_dead_letters = sum(_header(r.headers, DLT_SERVICE) in group for r in records)
    report.unanswered, report.callees = unanswered, callees
    report.services, report.ignore = [s.name for s in svcs], rules.patterns
    return report


def _shadow_settings() -> Settings:
    """Settings of a shadow run: no retry delays, and a transient failure (such as a
    request no shadowed service answers) retried KIT_RETRIES times, not for a time span:
    in-process, retrying cannot change the outcome."""
    return load_settings(
        bootstrap_servers="memory", retry_backoff=0.0, retry_backoff_max=0.0, transient_timeout=0
    )


async def _run(
    svcs: list[Service],
    records: list[Record],
    schemas: Mapping[bytes, Schema],
    input_topics: set[str],
    *,
    fixed: bool,
) -> tuple[Harness, int, set[str]]:
    """Run the recording's `input_topics` through the services; returns the harness, the
    number of records fed, and the input topics. Unless `fixed`, a topic the services
    publish to themselves is no input: the run is repeated without it."""
    from kit.testing.harness import Harness

    while True:
        harness = Harness(*svcs, settings=_shadow_settings())
        fed = harness.feed_records(records, schemas, input_topics)
        await harness.run()
        internal = input_topics & {o.topic for o in harness.outputs}
        if fixed or not internal:
            return harness, fed, input_topics
        input_topics = input_topics - internal
        if not input_topics:
            raise KitError(
                f"the services publish to every recorded topic they consume "
                f"({', '.join(sorted(internal))}): name the inputs with --inputs"
            )


def _unanswered(produced: list[Emitted], svcs: list[Service]) -> tuple[list[str], list[str]]:
    """Request topics no shadowed service answers, and the services they belong to."""
    answered = {r.topic for s in svcs for r in s.responders()}
    asked = {o.topic: o.headers.get(METHOD, b"") for o in produced if o.service == "request"}
    topics = sorted(t for t in asked if t not in answered)
    callees = {asked[t].decode().rpartition(".")[0] or t for t in topics}
    return topics, sorted(callees)


def _header(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    """The last value of header `name`, as text; None if absent."""
    found = None
    for key, value in headers:
        if key == name:
            found = (value or b"").decode(errors="replace")
    return found


def _ours(rec: Record, group: set[str]) -> bool:
    """False for a liveness mark, or a dead letter written by a service outside `group`."""
    if _header(rec.headers, MARKER) is not None:
        return False
    service = _header(rec.headers, DLT_SERVICE)
    return service is None or service in group


def _note(headers: Iterable[tuple[str, bytes | None]]) -> str:
    pairs = list(headers)
    kind = _header(pairs, DLT_TYPE)
    return f"dead letter: {kind}: {_header(pairs, DLT_MESSAGE)}" if kind else ""


def _recorded(rec: Record) -> _Out:
    return _Out(rec.topic, rec.key, rec.value, _note(rec.headers))


def _emitted(item: Emitted) -> _Out:
    return _Out(item.topic, item.key, item.value, _note(item.message.headers() or []))


def _diff(
    recorded: list[_Out], produced: list[_Out], codec: Codec, rules: IgnoreRules
) -> tuple[list[Difference], int]:
    """The differences between both sides, and how many field changes `rules` ignored."""

    def group(items: list[_Out]) -> dict[tuple[str, bytes | None], list[tuple[Any, str]]]:
        out: dict[tuple[str, bytes | None], list[tuple[Any, str]]] = defaultdict(list)
        for item in items:
            out[(item.topic, item.key)].append((_decode(item.value, codec), item.note))
        return out

    left, right = group(recorded), group(produced)
    found: list[Difference] = []
    ignored = 0
    for topic, key in sorted(set(left) | set(right), key=lambda k: (k[0], k[1] or b"")):
        a, b = left.get((topic, key), []), right.get((topic, key), [])
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                found.append(Difference("missing", topic, key, i, a[i][0], note=a[i][1]))
            elif i >= len(a):
                found.append(Difference("extra", topic, key, i, shadow=b[i][0], note=b[i][1]))
            else:
                changes = list(field_changes(a[i][0], b[i][0], ""))
                kept = tuple(c for c in changes if not rules.covers(topic, c.path))
                ignored += len(changes) - len(kept)
                if kept:
                    found.append(Difference("changed", topic, key, i, a[i][0], b[i][0], kept))
    return found, ignored


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


def _show(value: Any) -> str:
    """A decoded value for the report: times as ISO-8601 text, the rest as JSON (cut short)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return json.dumps(to_json(value), default=str)[:200]


def _show_key(key: bytes | None) -> str:
    if key is None:
        return "null"
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key.hex()
