"""`Catalog` as text (`kit catalog`), as JSON (`--json`) and as a Mermaid flowchart."""

from __future__ import annotations

from typing import Any

from kit.catalog.model import Catalog, ServiceView

__all__ = ["format_text", "to_json", "to_mermaid"]

# Any: every Any here is a JSON value.


def _service_json(svc: ServiceView) -> dict[str, Any]:
    return {
        "name": svc.name,
        "versions": sorted(svc.versions),
        "instances": svc.instances,
        "consumes": [
            {"topic": e.topic, "schema": e.event_schema, "handler": e.name} for e in svc.handlers
        ],
        "answers": [
            {"name": e.name, "topic": e.topic, "request": e.event_schema, "reply": e.reply_schema}
            for e in svc.responders
        ],
        "publishes": [
            {"topic": topic, "schemas": sorted(schemas)}
            for topic, schemas in sorted(svc.publishes.items())
        ],
        "calls": sorted(svc.calls),
    }


def to_json(catalog: Catalog) -> dict[str, Any]:
    """The `--json` document: services, topics (publishers and consumers) and call edges."""
    return {
        "live": catalog.live,
        "services": [_service_json(s) for _, s in sorted(catalog.services.items())],
        "topics": [
            {
                "topic": t.topic,
                "schemas": t.schemas,
                "publishers": {svc: sorted(names) for svc, names in sorted(t.publishers.items())},
                "consumers": [
                    {"service": c.service, "handler": c.handler, "schema": c.schema}
                    for c in t.consumers
                ],
            }
            for t in catalog.topics().values()
        ],
        "calls": [{"caller": c.caller, "target": c.target} for c in catalog.calls()],
    }


def _service_lines(svc: ServiceView, live: bool) -> list[str]:
    versions = ", ".join(sorted(svc.versions)) or "?"
    count = f"  {svc.instances} instance(s)" if live else ""
    lines = [f"{svc.name}  {versions}{count}"]
    for ep in svc.responders:
        lines.append(f"  answers   {ep.name} @ {ep.topic} ({ep.event_schema} -> {ep.reply_schema})")
    for ep in svc.handlers:
        lines.append(f"  consumes  {ep.topic} ({ep.event_schema}) in {ep.name}")
    for topic, schemas in sorted(svc.publishes.items()):
        lines.append(f"  publishes {topic} ({', '.join(sorted(schemas))})")
    for target in sorted(svc.calls):
        lines.append(f"  calls     {target}")
    return lines


def format_text(catalog: Catalog, source: str = "") -> str:
    """The human-readable catalog: services, then topics, then calls."""
    if not catalog.services:
        return f"no live service instances{f' on {source}' if source else ''}"
    lines = ["SERVICES"]
    for _, svc in sorted(catalog.services.items()):
        lines += ["  " + line for line in _service_lines(svc, catalog.live)]
    lines += ["", "TOPICS"]
    for view in catalog.topics().values():
        lines.append(f"  {view.topic}")
        for publisher, schemas in sorted(view.publishers.items()):
            lines.append(f"    <- {publisher} ({', '.join(sorted(schemas))})")
        for c in view.consumers:
            lines.append(f"    -> {c.service}.{c.handler} ({c.schema})")
    calls = catalog.calls()
    lines += ["", "CALLS"]
    lines += [f"  {c.caller} -> {c.target}" for c in calls] or ["  (none seen)"]
    instances = sum(s.instances for s in catalog.services.values())
    where = f" on {source}" if source else ""
    lines.append("")
    if catalog.live:
        summary = f"{len(catalog.services)} service(s), {instances} live instance(s){where}"
    else:
        summary = f"{len(catalog.services)} declared service(s); calls are seen only live"
    lines.append(summary)
    return "\n".join(lines)


def _label(text: str) -> str:
    """A Mermaid label in double quotes (quotes written as an entity)."""
    return '"' + text.replace('"', "#quot;") + '"'


def _short(schema: str) -> str:
    return schema.rpartition(".")[2]


def to_mermaid(catalog: Catalog) -> str:
    """A Mermaid flowchart: services and topics as nodes, publish and consume edges, and
    dashed call edges from caller to the called service (labelled with the method)."""
    lines = ["flowchart LR"]
    ids: dict[str, str] = {}
    for i, (name, svc) in enumerate(sorted(catalog.services.items())):
        ids[name] = f"s{i}"
        versions = ", ".join(sorted(svc.versions))
        lines.append(f"    s{i}[{_label(f'{name} {versions}'.strip())}]")
    topics = catalog.topics()
    for i, topic in enumerate(topics):
        lines.append(f"    t{i}[/{_label(topic)}/]")
    for i, view in enumerate(topics.values()):
        for publisher, schemas in sorted(view.publishers.items()):
            names = ", ".join(_short(s) for s in sorted(schemas))
            lines.append(f"    {ids[publisher]} -->|{_label(names)}| t{i}")
        for c in view.consumers:
            lines.append(f"    t{i} -->|{_label(c.handler)}| {ids[c.service]}")
    for n, call in enumerate(catalog.calls()):
        target = ids.get(call.service)
        if target is None:  # a service with no live instance: its own node
            target = ids[call.service] = f"x{n}"
            lines.append(f"    x{n}[{_label(call.service + ' (not running)')}]")
        lines.append(f"    {ids[call.caller]} -.->|{_label(call.method)}| {target}")
    return "\n".join(lines)
