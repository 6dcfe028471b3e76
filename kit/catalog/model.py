"""`Catalog`: what each service consumes, publishes, answers and calls, and the graph of it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kit.event import Event
from kit.registry.describe import publications_of
from kit.registry.model import Endpoint, Registration, endpoints_of
from kit.schema import Schema
from kit.service import Responder, Service

__all__ = [
    "Call",
    "Catalog",
    "Consumer",
    "ServiceView",
    "TopicView",
    "from_registrations",
    "from_services",
]


@dataclass
class ServiceView:
    """One service, over all its live instances (or its declaration, offline)."""

    name: str
    versions: set[str] = field(default_factory=set)
    instances: int = 0
    endpoints: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    """By (kind, name): handlers (what it consumes) and responders (what it answers)."""
    publishes: dict[str, set[str]] = field(default_factory=dict)
    """Topic -> schema full names."""
    calls: set[str] = field(default_factory=set)
    """Targets it calls, "service.method"."""

    @property
    def handlers(self) -> list[Endpoint]:
        """The event handlers, by name."""
        return [e for (kind, _), e in sorted(self.endpoints.items()) if kind != "responder"]

    @property
    def responders(self) -> list[Endpoint]:
        """The responders (request-reply endpoints), by name."""
        return [e for (kind, _), e in sorted(self.endpoints.items()) if kind == "responder"]

    def add_publication(self, topic: str, schemas: Iterable[str]) -> None:
        """Note that the service publishes `schemas` to `topic`."""
        self.publishes.setdefault(topic, set()).update(schemas)


@dataclass(frozen=True)
class Consumer:
    """A handler or responder of a service that reads a topic."""

    service: str
    handler: str
    schema: str
    kind: str = "handler"


@dataclass
class TopicView:
    """One topic: who publishes which schemas to it, and who consumes it."""

    topic: str
    publishers: dict[str, set[str]] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)

    @property
    def schemas(self) -> list[str]:
        """Every schema seen on the topic (published or consumed), sorted."""
        names = {s for found in self.publishers.values() for s in found}
        return sorted(names | {c.schema for c in self.consumers})


@dataclass(frozen=True)
class Call:
    """A call edge: `caller` sent requests to `target` ("service.method")."""

    caller: str
    target: str

    @property
    def service(self) -> str:
        """The called service."""
        return self.target.rpartition(".")[0]

    @property
    def method(self) -> str:
        """The called responder's name."""
        return self.target.rpartition(".")[2]


@dataclass
class Catalog:
    """Services by name, and the Avro schemas known by full name (for AsyncAPI payloads)."""

    services: dict[str, ServiceView] = field(default_factory=dict)
    schemas: dict[str, Schema] = field(default_factory=dict)
    live: bool = True
    """Built from running instances (False: from declarations)."""

    def service(self, name: str) -> ServiceView:
        """The view of service `name` (made on first use)."""
        view = self.services.get(name)
        if view is None:
            view = self.services[name] = ServiceView(name)
        return view

    def topics(self) -> dict[str, TopicView]:
        """Every topic published or consumed as an event stream, by name (sorted).

        A responder's request topic is not here: it is a call target (`calls()`).
        """
        out: dict[str, TopicView] = {}
        for svc in sorted(self.services.values(), key=lambda s: s.name):
            for topic, schemas in sorted(svc.publishes.items()):
                view = out.setdefault(topic, TopicView(topic))
                view.publishers.setdefault(svc.name, set()).update(schemas)
            for ep in svc.handlers:
                view = out.setdefault(ep.topic, TopicView(ep.topic))
                view.consumers.append(Consumer(svc.name, ep.name, ep.event_schema))
        return dict(sorted(out.items()))

    def calls(self) -> list[Call]:
        """Every call edge, sorted."""
        edges = {Call(s.name, t) for s in self.services.values() for t in s.calls}
        return sorted(edges, key=lambda c: (c.caller, c.target))

    def responder(self, target: str) -> Endpoint | None:
        """The responder a "service.method" target names, if the catalog knows it."""
        service, _, method = target.rpartition(".")
        view = self.services.get(service)
        return view.endpoints.get(("responder", method)) if view is not None else None

    def schema_names(self) -> list[str]:
        """Every schema full name the catalog mentions, sorted."""
        names: set[str] = set()
        for svc in self.services.values():
            for ep in svc.endpoints.values():
                names.add(ep.event_schema)
                if ep.reply_schema:
                    names.add(ep.reply_schema)
            for schemas in svc.publishes.values():
                names.update(schemas)
        return sorted(names)


def from_registrations(registrations: Iterable[Registration]) -> Catalog:
    """The catalog of the live instances: each service is the union of its instances."""
    catalog = Catalog(live=True)
    for reg in registrations:
        view = catalog.service(reg.service)
        view.versions.add(reg.version)
        view.instances += 1
        for ep in reg.endpoints:
            view.endpoints.setdefault((ep.kind, ep.name), ep)
        for pub in reg.publishes:
            view.add_publication(pub.topic, pub.schemas)
        view.calls.update(reg.calls)
    return catalog


def from_services(services: Iterable[Service]) -> Catalog:
    """The catalog of service declarations (no broker): their endpoints and `publishes=`.

    Calls are only known from running instances, so an offline catalog has none.
    """
    catalog = Catalog(live=False)
    for service in services:
        view = catalog.service(service.name)
        view.versions.add(service.version)
        for ep in endpoints_of(service):
            view.endpoints.setdefault((ep.kind, ep.name), ep)
        for pub in publications_of(service):
            view.add_publication(pub.topic, pub.schemas)
        for event_type in _event_types(service):
            schema = event_type.kit_schema()
            catalog.schemas.setdefault(schema.full_name, schema)
    return catalog


def _event_types(service: Service) -> Iterable[type[Event]]:
    for handler in service.handlers:
        yield handler.event_type
        if isinstance(handler, Responder) and handler.reply_type is not None:
            yield handler.reply_type
        for _, event_type in handler.publishes:
            yield event_type
