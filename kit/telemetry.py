"""What a running service knows about itself: counters, the record in hand, trace headers.

A leaf (it imports only kit.protocol), so the dispatcher, contexts and requesters can keep
counters and carry traces without knowing who reads them: the Prometheus endpoint
(kit.metrics), the registry heartbeats (`kit services --stats`), the JSON log format and
OpenTelemetry (kit.otel) all read from here. With none of them on, the hot path pays an
integer addition and two boolean tests per record, and two clock reads per batch.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any

from kit.protocol import Headers, MessageLike

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_LEARNED",
    "TRACEPARENT",
    "TRACESTATE",
    "Active",
    "CallStats",
    "HandlerStats",
    "Stats",
    "Tracer",
    "active",
    "current_instance",
    "current_record",
    "install_tracer",
    "tracer",
    "unique_names",
    "with_trace",
]

log = logging.getLogger("kit.telemetry")

TRACEPARENT = "traceparent"
"""W3C Trace Context header, carried on events, requests, replies and dead letters."""
TRACESTATE = "tracestate"
"""W3C Trace Context vendor state, carried beside `traceparent`."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histograms; +Inf is implied."""

MAX_LEARNED = 256
"""Topics a Stats learns it published to, at most (each is carried in every heartbeat)."""

current_record: ContextVar[MessageLike | None] = ContextVar("kit_current_record", default=None)
"""The record whose handler is running in this task (None outside handlers): read by the
JSON log format and by requests made from handlers (for their trace headers)."""

current_instance: ContextVar[tuple[str, str] | None] = ContextVar(
    "kit_current_instance", default=None
)
"""(service, instance id) of the runtime whose task this is (set by Runtime.start and run)."""


class Latency:
    """A histogram without a lock: counts per bucket, the sum and the count. Only the event
    loop writes it; a reader on another thread may see a count one behind, never torn."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, count at or below it), +Inf last."""
        out, total = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            total += n
            out.append((bound, total))
        return out


class HandlerStats:
    """One handler's or responder's counters since start."""

    __slots__ = ("busy", "dead_lettered", "failed", "handled", "latency", "retried", "started")

    def __init__(self) -> None:
        self.handled = 0
        """Records the handler returned from (after any retries)."""
        self.failed = 0
        """Attempts that raised (each retry that raised counts)."""
        self.retried = 0
        """Attempts made again after a failure."""
        self.dead_lettered = 0
        """Records sent to the dead-letter topic (undecodable ones included)."""
        self.busy = 0.0
        """Seconds spent handling records (decode, handler, publish), summed per batch."""
        self.latency = Latency()
        """Seconds per successful handler call: every call when `active.timed`, else only
        the calls of the full path (retried calls, traced records)."""
        self.started: dict[object, float] = {}
        """Monotonic start of the call in progress, per task handling records (a
        partition's lane, or one key of it: kit.lanes.handle_by_key), for the liveness
        check; always on the full path, on the fast path when `active.timed`."""

    def as_dict(self) -> dict[str, Any]:  # Any: JSON values
        """The counters as JSON (in heartbeats)."""
        handled = self.handled
        return {
            "handled": handled,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "seconds": round(self.busy, 6),
            "average_ms": round(self.busy / handled * 1000, 3) if handled else 0.0,
        }


class CallStats:
    """Requests one requester sent to one `service.method`."""

    __slots__ = ("errors", "in_flight", "latency", "sent", "timeouts")

    def __init__(self) -> None:
        self.sent = 0
        self.timeouts = 0
        self.errors = 0
        """Replies that carried the responder's error (RemoteError)."""
        self.in_flight = 0
        self.latency = Latency()
        """Seconds from send to the reply, for answered calls."""

    def as_dict(self) -> dict[str, Any]:  # Any: JSON values
        """The counters as JSON (in heartbeats)."""
        return {
            "sent": self.sent,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "in_flight": self.in_flight,
        }


class Stats:
    """A runtime's (or a requester's) counters: per handler, per call target, and what
    it has published (topic → schema full names, learned as it publishes)."""

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerStats] = {}
        self.calls: dict[tuple[str, str], CallStats] = {}
        self.published: dict[str, set[str]] = {}
        self.delivery_errors = 0
        """Records the producer could not deliver (each failed delivery report)."""
        self.learned_all = False
        """True once more topics were published to than `published` keeps (MAX_LEARNED)."""
        self.started = time.time()

    def handler(self, name: str) -> HandlerStats:
        """The counters of handler `name` (made on first use)."""
        stats = self.handlers.get(name)
        if stats is None:
            stats = self.handlers[name] = HandlerStats()
        return stats

    def call(self, service: str, method: str) -> CallStats:
        """The counters of calls to `service.method` (made on first use)."""
        stats = self.calls.get((service, method))
        if stats is None:
            stats = self.calls[(service, method)] = CallStats()
        return stats

    def learn_published(self, topic: str, schema: str) -> None:
        """Note that `schema` was published to `topic` (at most MAX_LEARNED topics: the
        registration that carries them must stay small)."""
        names = self.published.get(topic)
        if names is None:
            if len(self.published) >= MAX_LEARNED:
                if not self.learned_all:
                    self.learned_all = True
                    log.warning(
                        "published to more than %d topics: the registry lists the first %d",
                        MAX_LEARNED,
                        MAX_LEARNED,
                    )
                return
            names = self.published[topic] = set()
        names.add(schema)

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds the longest-running handler call has been running (0 when none is)."""
        now = time.monotonic() if now is None else now
        starts = [s for h in list(self.handlers.values()) for s in list(h.started.values())]
        return now - min(starts) if starts else 0.0

    def as_dict(self) -> dict[str, Any]:  # Any: JSON values
        """Every counter as JSON (carried in heartbeats, shown by `kit services --stats`)."""
        return {
            "handlers": {name: h.as_dict() for name, h in sorted(self.handlers.items())},
            "calls": {f"{s}.{m}": c.as_dict() for (s, m), c in sorted(self.calls.items())},
            "delivery_errors": self.delivery_errors,
        }


def unique_names(handlers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each handler's name in a Stats, by topic, from (topic, name) pairs: its own name, or
    `name@topic` when handlers of two topics share it."""
    pairs = list(handlers)
    names = [name for _topic, name in pairs]
    return {t: n if names.count(n) == 1 else f"{n}@{t}" for t, n in pairs}


class Tracer:
    """Carries W3C trace headers from each record to what its handling sends.

    This base only propagates: an event published by a handler, a request made from it and
    a reply get the `traceparent`/`tracestate` of the record being handled, unchanged.
    kit.otel's subclass makes OpenTelemetry spans (`process`, `publish`, `receive`) and
    injects their context instead.
    """

    spans = False
    """True when `process` makes spans (the dispatcher then takes its full path)."""

    def outgoing(
        self, topic: str, key: bytes | None, headers: Headers | None, source: MessageLike | None
    ) -> Headers | None:
        """The headers to send a record with, trace headers added (from `source`, the
        record being handled, when given, else the one in `current_record`)."""
        return with_trace(headers, source if source is not None else current_record.get())

    def process(self, msg: MessageLike, handler: str, group: str) -> AbstractContextManager[object]:
        """Wraps the handling of one record (every attempt)."""
        return nullcontext()

    # Any: a MessageLike or confluent_kafka.Message (whose stubbed headers() type is wider)
    def received(self, msg: Any, service: str, method: str) -> None:
        """A reply arrived for a call to `service.method`."""

    def failed(self, error: BaseException, final: bool) -> None:
        """An attempt at the current record's handler raised `error`; `final` when it is
        given up (dead-lettered, or answered with the error)."""


def with_trace(headers: Headers | None, source: MessageLike | None) -> Headers | None:
    """`headers` plus the trace headers of `source` that `headers` lacks."""
    if source is None:
        return headers
    found = source.headers()
    if not found:
        return headers
    trace = [(k, v) for k, v in found if k in (TRACEPARENT, TRACESTATE) and v is not None]
    if not trace:
        return headers
    if not headers:
        return trace
    have = {k for k, _ in headers}
    if TRACEPARENT in have:  # the sender's own trace: no other trace's vendor state with it
        return headers
    return headers + [(k, v) for k, v in trace if k not in have]


class Active:
    """What this process observes, read by the dispatcher once per batch of a partition."""

    def __init__(self) -> None:
        self.tracer = Tracer()
        """The process's tracer (`tracer()`)."""
        self.timed = False
        """Time each handler call (latency histograms, the stuck-handler check): set by
        kit.metrics when KIT_METRICS_PORT is on. Off, only the time per batch is summed."""
        self.records = False
        """Set `current_record` for every record, not only on the full path: set by
        kit.logs when log lines carry the record (KIT_LOG_FORMAT=json)."""


active = Active()
"""The process's observation switches (see Active)."""


def tracer() -> Tracer:
    """The process's tracer: propagation only, unless kit.otel installed its own."""
    return active.tracer


def install_tracer(new: Tracer | None) -> Tracer:
    """Make `new` the process's tracer (None: propagation only); returns the old one."""
    old, active.tracer = active.tracer, new or Tracer()
    return old
