"""`Service` and its decorators: a table of handler declarations, with no I/O."""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Protocol, TypeVar, cast, overload

from kit.config import Settings
from kit.errors import ConfigError
from kit.event import Event
from kit.schema import SchemaRepository, repository_of_types

__all__ = [
    "Caller",
    "Endpoint",
    "Handler",
    "HandlerFunc",
    "Publishes",
    "Responder",
    "Service",
    "StartHook",
    "repository_of",
]

Req = TypeVar("Req", bound=Event, contravariant=True)
Rep = TypeVar("Rep", bound=Event, covariant=True)
Q = TypeVar("Q", bound=Event)
P = TypeVar("P", bound=Event)

Publishes = Iterable[type[Event] | tuple[str, type[Event]]]
"""What `publishes=` takes: Event classes (to their default topic, the schema's full name)
or (topic, Event class) pairs."""

# Any: None or a responder's Event, or an awaitable of it (async handlers); checked at run time
HandlerFunc = Callable[..., Awaitable[Any] | Any]

# Any: the kit.runtime.Runtime that is starting, a layer above this one
StartHook = Callable[[Any], Awaitable[None]]
"""A coroutine function `Runtime.start` awaits with the runtime (see `Service.on_start`)."""


@dataclass(frozen=True)
class Handler:
    """One declared handler: the function, its event type, topic and options."""

    func: HandlerFunc
    event_type: type[Event]
    topic: str
    name: str
    takes_context: bool
    is_async: bool
    retries: int | None = None
    dead_letter_topic: str | None = None
    partitions: int | None = None
    transient_timeout: float | None = None
    publishes: tuple[tuple[str, type[Event]], ...] = ()
    """(topic, Event class) of each event the handler declares it publishes (`publishes=`);
    the registry carries them, with what the instance learned it publishes at run time."""
    key_concurrency: int | None = None
    """With 2 or more: records of one partition with different keys are handled
    concurrently, up to this many keys at a time, in order per key (kit.lanes)."""

    @property
    def schema_name(self) -> str:
        """Full name of the event schema this handler takes."""
        return self.event_type.kit_schema().full_name


@dataclass(frozen=True)
class Responder(Handler):
    """A handler whose return value (an Event) is sent back as the reply to a request."""

    reply_type: type[Event] | None = None


class Endpoint(Protocol[Req, Rep]):
    """A function declared with `@service.responder()`, as the type checker sees it.

    It is the function itself, callable as written, and the address of a request whose
    request type (`Req`) and reply type (`Rep`) are known statically:
    `await ctx.request(reserve, Reserve(...))` has the type `Reservation`, and a
    request of the wrong type is a type error. The same holds for `Client.request` and
    `Harness.request`.
    """

    @property
    def __kit_responder__(self) -> tuple[str, Responder]:
        """(service name, declaration) of the responder."""
        ...

    @property
    def __kit_reply__(self) -> type[Rep]:
        """The reply Event class."""
        ...

    # Any: the function's own context argument and return (awaitable or not) as written
    def __call__(self, request: Req, /, *args: Any, **kwargs: Any) -> Any: ...


class _ResponderDecorator(Protocol):
    """What `Service.responder(...)` returns: a decorator keeping the function's types."""

    @overload
    def __call__(self, func: Callable[Concatenate[Q, ...], Awaitable[P]], /) -> Endpoint[Q, P]: ...

    @overload
    def __call__(self, func: Callable[Concatenate[Q, ...], P], /) -> Endpoint[Q, P]: ...


class Caller:
    """The typed `request(...)` of `Context`, `Client`, `Harness` and the requesters: one
    set of overloads, each class implementing `_request`."""

    __slots__ = ()

    @overload
    async def request(
        self,
        target: Endpoint[Q, P],
        event: Q,
        *,
        reply: None = None,
        timeout: float | None = None,
        key: str | bytes | None = None,
    ) -> P: ...

    @overload
    async def request(
        self,
        target: str | Endpoint[Any, Any],  # Any: with reply=, the responder's types are not used
        event: Event,
        *,
        reply: type[P],
        timeout: float | None = None,
        key: str | bytes | None = None,
    ) -> P: ...

    async def request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form above
        event: Event,
        *,
        reply: type[Event] | None = None,
        timeout: float | None = None,
        key: str | bytes | None = None,
    ) -> Event:
        """Call a responder and wait for its typed reply.

        `target` is a responder function (`request(reserve, Reserve(...))`, typed
        `Reservation`) or "service.method" with `reply=` the reply Event class. The deadline
        is `timeout` or KIT_REQUEST_TIMEOUT. Raises RequestTimeout, RemoteError (the
        responder failed) or ServiceUnavailable (no live instance, when known).
        """
        return await self._request(target, event, reply, timeout, key)

    async def _request(
        self,
        target: str | Endpoint[Any, Any],  # Any: either form of request()
        event: Event,
        reply: type[Event] | None,
        timeout: float | None,
        key: str | bytes | None,
    ) -> Event:
        raise NotImplementedError


@dataclass
class Service:
    """A service declaration: a name, a version and the handlers it serves.

    Declaring does no I/O; `kit run module:service` (or `kit.run`) runs it::

        svc = Service("payments", version="1.2.0")

        @svc.handler()
        async def on_order(event: OrderPlaced, ctx: Context) -> None:
            ctx.publish(PaymentCompleted(...), key=ctx.key)
    """

    name: str
    version: str = "0.0.0"
    description: str = ""
    group_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)
    exactly_once: bool = False
    """Handle each fetched batch in one Kafka transaction with its offsets (KIT_EXACTLY_ONCE
    overrides it): read_committed consumers see each output exactly once."""
    start_hooks: list[StartHook] = field(default_factory=list)
    """Declared with `on_start`: awaited in order by each instance's `Runtime.start`."""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(
                "Service.name", f"must be a non-empty name without spaces: {self.name!r}"
            )

    @property
    def group(self) -> str:
        """The consumer group every instance of this service joins."""
        return self.group_id or self.name

    def handler(
        self,
        topic: str | None = None,
        *,
        retries: int | None = None,
        dead_letter_topic: str | None = None,
        partitions: int | None = None,
        transient_timeout: float | None = None,
        publishes: Publishes = (),
        key_concurrency: int | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Declare a handler of one event type.

        The function takes the event (its annotation gives the type) and optionally a
        `Context`. `topic` defaults to the event schema's full name. `retries` overrides
        KIT_RETRIES; `dead_letter_topic` overrides `<topic><KIT_DEAD_LETTER_SUFFIX>`;
        `partitions` is used when the kit creates the topic. `transient_timeout` overrides
        KIT_TRANSIENT_TIMEOUT: how long (seconds) a transient failure of a dependency
        (ServiceUnavailable, RequestTimeout, DeliveryError) is retried, in order, before
        the record is dead-lettered. `publishes` declares the events it publishes: Event
        classes, or (topic, Event class) pairs (for `kit catalog`; nothing checks them).

        By default a partition's records are handled one after another. `key_concurrency`
        N (2 or more; 1 is the default order) is for a handler that needs order only per
        key, and waits (I/O): records of one partition with different keys are then
        handled concurrently, up to N keys at a time, each key's records still in order,
        and offsets are committed only below the lowest record not yet handled, so after
        a stop or a crash the records of other keys past it are handled again. Records
        without a key share one order. Not under KIT_EXACTLY_ONCE (a warning at start),
        where each batch runs in order in its transaction.
        """
        _check_options(retries, transient_timeout)
        if key_concurrency is not None and (
            isinstance(key_concurrency, bool)
            or not isinstance(key_concurrency, int)
            or key_concurrency < 1
        ):
            raise ConfigError("key_concurrency", f"must be an int >= 1, got {key_concurrency!r}")

        localns = sys._getframe(1).f_locals  # resolve annotations of locally defined events

        def register(func: HandlerFunc) -> HandlerFunc:
            event_type, takes_context = _event_parameter(func, localns)
            self._add(
                Handler(
                    func=func,
                    event_type=event_type,
                    topic=topic or event_type.kit_schema().full_name,
                    name=func.__name__,
                    takes_context=takes_context,
                    is_async=inspect.iscoroutinefunction(func),
                    retries=retries,
                    dead_letter_topic=dead_letter_topic,
                    partitions=partitions,
                    transient_timeout=transient_timeout,
                    publishes=_publications(publishes, func),
                    key_concurrency=key_concurrency,
                )
            )
            return func

        return register

    def responder(
        self,
        topic: str | None = None,
        *,
        retries: int | None = 0,
        partitions: int | None = None,
        transient_timeout: float | None = 0,
        publishes: Publishes = (),
    ) -> _ResponderDecorator:
        """Declare a responder: takes a request event, returns the reply event.

        `topic` defaults to `<service>.<function name>`, the address callers use. A
        responder's failure goes back to its caller at once (`retries` 0, and no retry of
        transient failures: the caller's deadline is running), unless these are given.
        `publishes` declares the events it publishes, as for `handler`.
        """

        _check_options(retries, transient_timeout)
        localns = sys._getframe(1).f_locals

        def register(func: HandlerFunc) -> Endpoint[Event, Event]:
            event_type, takes_context = _event_parameter(func, localns)
            hints = typing.get_type_hints(func, localns=dict(localns))
            reply = hints.get("return")
            if not (isinstance(reply, type) and issubclass(reply, Event)):
                raise ConfigError(
                    f"{self.name}.{func.__name__}",
                    "a responder must be annotated to return an Event subclass",
                )
            _bound(reply, f"{self.name}.{func.__name__}")
            self._add(
                Responder(
                    func=func,
                    event_type=event_type,
                    topic=topic or f"{self.name}.{func.__name__}",
                    name=func.__name__,
                    takes_context=takes_context,
                    is_async=inspect.iscoroutinefunction(func),
                    retries=retries,
                    partitions=partitions,
                    transient_timeout=transient_timeout,
                    reply_type=reply,
                    publishes=_publications(publishes, func),
                )
            )
            func.__kit_responder__ = (self.name, self.handlers[-1])  # type: ignore[attr-defined]
            func.__kit_reply__ = reply  # type: ignore[attr-defined]
            return cast(Endpoint[Event, Event], func)

        return cast(_ResponderDecorator, register)

    def on_start(self, func: StartHook) -> StartHook:
        """Declare `async def func(runtime)`, awaited as each instance starts.

        `Runtime.start` awaits it once the runtime is connected (its transport open,
        codec, dispatcher and extensions set up) and before it subscribes: no record is
        handled, and no request answered, until every hook has returned. Load state a
        service needs here (read a topic in a worker thread, with a deadline); an
        exception fails the start. Register clean-up on `runtime.on_closed`.
        """
        self.start_hooks.append(func)
        return func

    def responders(self) -> list[Responder]:
        """The responders among the handlers."""
        return [h for h in self.handlers if isinstance(h, Responder)]

    def topics(self) -> list[str]:
        """Every topic this service consumes, in declaration order."""
        return [h.topic for h in self.handlers]

    def _add(self, handler: Handler) -> None:
        for other in self.handlers:
            if other.topic == handler.topic:
                raise ConfigError(
                    f"{self.name}.{handler.name}",
                    f"topic {handler.topic!r} already has handler {other.name!r} in this service",
                )
        self.handlers.append(handler)


def _event_parameter(
    func: HandlerFunc, localns: dict[str, object] | None = None
) -> tuple[type[Event], bool]:
    """The event type of a handler's first parameter, and whether it takes a context."""
    params = list(inspect.signature(func).parameters.values())
    where = getattr(func, "__qualname__", repr(func))
    if not params or len(params) > 2:
        raise ConfigError(where, "a handler takes (event) or (event, ctx)")
    try:
        hints = typing.get_type_hints(func, localns=dict(localns or {}))
    except NameError as exc:
        raise ConfigError(where, f"cannot resolve an annotation: {exc}") from None
    event_type = hints.get(params[0].name)
    if not (isinstance(event_type, type) and issubclass(event_type, Event)):
        raise ConfigError(
            where, f"parameter {params[0].name!r} must be annotated with an Event type"
        )
    _bound(event_type, where)
    return event_type, len(params) == 2


def _bound(event_type: type[Event], where: str) -> None:
    """ConfigError naming the handler when an Event class is bound to no schema."""
    try:
        event_type.kit_schema()
    except TypeError as exc:
        raise ConfigError(where, f"{exc}: give it schema=... (see the README)") from None


def _publications(publishes: Publishes, func: HandlerFunc) -> tuple[tuple[str, type[Event]], ...]:
    """`publishes=` as (topic, Event class) pairs; ConfigError for anything else."""
    where = getattr(func, "__qualname__", repr(func))
    out = []
    for item in publishes:
        topic, event_type = item if isinstance(item, tuple) else (None, item)
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            wanted = "Event classes or (topic, Event class) pairs"
            raise ConfigError(where, f"publishes= takes {wanted}, got {item!r}")
        _bound(event_type, where)
        out.append((topic or event_type.kit_schema().full_name, event_type))
    return tuple(out)


def _check_options(retries: int | None, transient_timeout: float | None) -> None:
    if retries is not None and retries < 0:
        raise ConfigError("retries", f"must be >= 0, got {retries}")
    if transient_timeout is not None and transient_timeout < 0:
        raise ConfigError("transient_timeout", f"must be >= 0, got {transient_timeout}")


def repository_of(services: Iterable[Service], settings: Settings) -> SchemaRepository:
    """The schemas services read (see kit.schema.repository_of_types)."""
    return repository_of_types((h.event_type for s in services for h in s.handlers), settings)
