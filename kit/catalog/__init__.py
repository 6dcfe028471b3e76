"""The system as it runs: services, topics, publishers, consumers and calls (`kit catalog`).

A `Catalog` is built from the live registrations on the registry topic
(`from_registrations`, each carries what its instance consumes, publishes, answers and
calls) or offline from service declarations (`from_services`). It renders as text, JSON,
a Mermaid flowchart, or an AsyncAPI 3.0 document (`to_asyncapi`).
"""

from kit.catalog.asyncapi import ASYNCAPI_VERSION, AVRO_FORMAT, to_asyncapi
from kit.catalog.model import (
    Call,
    Catalog,
    Consumer,
    ServiceView,
    TopicView,
    from_registrations,
    from_services,
)
from kit.catalog.render import format_text, to_json, to_mermaid

__all__ = [
    "ASYNCAPI_VERSION",
    "AVRO_FORMAT",
    "Call",
    "Catalog",
    "Consumer",
    "ServiceView",
    "TopicView",
    "format_text",
    "from_registrations",
    "from_services",
    "to_asyncapi",
    "to_json",
    "to_mermaid",
]
