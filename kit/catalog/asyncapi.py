"""`Catalog` as an AsyncAPI 3.0 document: topics as channels, Avro schemas as messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kit.catalog.model import Catalog
from kit.protocol import REPLY_TO
from kit.registry.model import Endpoint
from kit.schema import Schema

__all__ = ["ASYNCAPI_VERSION", "AVRO_FORMAT", "avro_names", "safe_id", "to_asyncapi"]

# Any: every Any here is a JSON value of the document.

ASYNCAPI_VERSION = "3.0.0"
AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
"""The schemaFormat of every message payload: kit's events are Avro records."""
CONTENT_TYPE = "application/octet-stream"
ENCODING = (
    "Avro single-object encoding (or the schema registry's framing when "
    "KIT_SCHEMA_REGISTRY_URL is set) of the schema below."
)

_ID = re.compile(r"[^\w.\-]")

SchemaLookup = Callable[[str], Schema | None]


def safe_id(text: str) -> str:
    """`text` as an AsyncAPI key (letters, digits, '.', '-' and '_')."""
    return _ID.sub("_", text)


class _Document:
    """The document under construction: channels, operations and messages."""

    def __init__(self, catalog: Catalog, schema_of: SchemaLookup | None) -> None:
        self.catalog = catalog
        self.schema_of = schema_of
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}

    def message(self, schema: str) -> str:
        """The component key of the message of `schema` (made on first use)."""
        key = safe_id(schema)
        if key not in self.messages:
            found = self.catalog.schemas.get(schema)
            if found is None and self.schema_of is not None:
                found = self.schema_of(schema)
            message: dict[str, Any] = {
                "name": schema,
                "title": schema.rpartition(".")[2],
                "contentType": CONTENT_TYPE,
            }
            if found is not None:
                message["description"] = ENCODING
                schema_doc = avro_names(found.definition)
                message["payload"] = {"schemaFormat": AVRO_FORMAT, "schema": schema_doc}
            else:
                message["description"] = f"Avro record {schema} (its schema was not found)."
            self.messages[key] = message
        return key

    def channel(self, key: str, address: str | None, schemas: list[str], title: str = "") -> str:
        """Channel `key` with the messages of `schemas` added; returns its key."""
        channel = self.channels.setdefault(key, {"address": address, "messages": {}})
        if title:
            channel["title"] = title
        for schema in schemas:
            msg = self.message(schema)
            channel["messages"][msg] = {"$ref": f"#/components/messages/{msg}"}
        return key

    def operation(
        self, key: str, action: str, channel: str, schemas: list[str], summary: str
    ) -> dict[str, Any]:
        """Add operation `key` on `channel` for the messages of `schemas`."""
        op = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [_message_ref(channel, self.message(s)) for s in schemas],
        }
        self.operations[safe_id(key)] = op
        return op

    def request_reply(self, ep: Endpoint) -> tuple[str, str | None]:
        """The request channel of a responder, and its reply channel (None: no reply type)."""
        request = self.channel(safe_id(ep.topic), ep.topic, [ep.event_schema])
        if not ep.reply_schema:
            return request, None
        title = f"replies of {ep.topic}"
        reply = self.channel(safe_id(f"{ep.topic}.reply"), None, [ep.reply_schema], title)
        return request, reply

    def reply_of(self, ep: Endpoint, reply: str | None) -> dict[str, Any]:
        """An operation's `reply`: to the topic named in the request's reply-to header."""
        out: dict[str, Any] = {
            "address": {
                "location": f"$message.header#/{REPLY_TO}",
                "description": "the caller's reply topic, from the request's header",
            }
        }
        if reply is not None and ep.reply_schema:
            out["channel"] = {"$ref": f"#/channels/{reply}"}
            out["messages"] = [_message_ref(reply, self.message(ep.reply_schema))]
        return out


def avro_names(node: Any) -> Any:
    """An Avro schema with each named type's full name split into `name` and `namespace`
    (the form AsyncAPI's Avro schema accepts; references by full name stay as they are)."""
    if isinstance(node, list):
        return [avro_names(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: avro_names(value) for key, value in node.items()}
    name = out.get("name")
    if out.get("type") in ("record", "error", "enum", "fixed") and isinstance(name, str):
        namespace, _, simple = name.rpartition(".")
        if namespace:
            out["name"], out["namespace"] = simple, namespace
    return out


def _message_ref(channel: str, message: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{channel}/messages/{message}"}


def to_asyncapi(
    catalog: Catalog,
    *,
    title: str = "kit services",
    version: str = "1.0.0",
    description: str | None = None,
    bootstrap_servers: str | None = None,
    schema_of: SchemaLookup | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the catalog.

    Each topic is a channel whose messages are the Avro schemas seen on it (payloads with
    schemaFormat `AVRO_FORMAT`); each service has a `receive` operation per handler, a
    `send` operation per topic it publishes to, a `receive` operation with a `reply` per
    responder, and a `send` operation with a `reply` per call target. `schema_of` finds the
    Avro schemas the catalog does not hold (live: the schema topic or schemas folder).
    """
    doc = _Document(catalog, schema_of)
    for view in catalog.topics().values():
        doc.channel(safe_id(view.topic), view.topic, view.schemas)
    for name, svc in sorted(catalog.services.items()):
        for ep in svc.handlers:
            summary = f"{name} handles {ep.event_schema} in {ep.name}"
            doc.operation(
                f"{name}.{ep.name}", "receive", safe_id(ep.topic), [ep.event_schema], summary
            )
        for topic, schemas in sorted(svc.publishes.items()):
            summary = f"{name} publishes to {topic}"
            doc.operation(
                f"{name}.publish.{topic}", "send", safe_id(topic), sorted(schemas), summary
            )
        for ep in svc.responders:
            request, reply = doc.request_reply(ep)
            summary = f"{name} answers {ep.event_schema} with {ep.reply_schema}"
            op = doc.operation(f"{name}.{ep.name}", "receive", request, [ep.event_schema], summary)
            op["reply"] = doc.reply_of(ep, reply)
    for call in catalog.calls():
        _add_call(doc, call.caller, call.target)
    out: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": title, "version": version, "description": description or _about(catalog)},
    }
    if bootstrap_servers:
        out["servers"] = {"kafka": {"host": bootstrap_servers, "protocol": "kafka"}}
    out["channels"] = doc.channels
    out["operations"] = doc.operations
    out["components"] = {"messages": doc.messages}
    return out


def _add_call(doc: _Document, caller: str, target: str) -> None:
    ep = doc.catalog.responder(target)
    summary = f"{caller} calls {target}"
    if ep is None:  # no live instance tells its topic or schemas: the default address
        channel = doc.channel(safe_id(target), target, [])
        doc.operation(f"{caller}.call.{target}", "send", channel, [], summary)
        return
    request, reply = doc.request_reply(ep)
    op = doc.operation(f"{caller}.call.{target}", "send", request, [ep.event_schema], summary)
    op["reply"] = doc.reply_of(ep, reply)


def _about(catalog: Catalog) -> str:
    if catalog.live:
        count = sum(s.instances for s in catalog.services.values())
        return f"The running system, from {count} live instance(s) on the kit registry."
    return "The system as declared by its service modules (calls are seen only live)."
