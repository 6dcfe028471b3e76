"""``kit request SERVICE METHOD --json '{...}'``: call a responder and print its reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kit.cli.errors import Exit, InvalidInput, UnreadableReply, guarded

if TYPE_CHECKING:
    from kit.registry.reader import Registry

__all__ = ["request"]


@click.command("request", short_help="Call a responder: kit request SERVICE METHOD --json.")
@click.argument("service")
@click.argument("method")
@click.option("--json", "payload", required=True, help="the request as a JSON object")
@click.option("--timeout", type=float, default=None, help="deadline in seconds")
@click.option(
    "--schema", default=None, help="request schema full name (default: from the registry)"
)
@click.option("--topic", default=None, help="request topic (default: SERVICE.METHOD)")
@guarded("kit request")
def request(
    service: str,
    method: str,
    payload: str,
    timeout: float | None,
    schema: str | None,
    topic: str | None,
) -> int:
    """Call a responder: kit request SERVICE METHOD --json '{...}'.

    Prints the reply as JSON. Exit 0 with the reply; 2 bad input (or no such method), 3
    timeout, 4 remote error (its traceback is printed when the responder sent one), 5 no
    live instance. The request topic is never created from here.
    """
    import asyncio
    import json

    from kit.errors import RemoteError

    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise InvalidInput(f"--json is not valid JSON: {exc}") from None
    try:
        answer = asyncio.run(_call(service, method, document, timeout, schema, topic))
    except RemoteError as exc:
        if exc.remote_traceback:
            click.echo(exc.remote_traceback.rstrip(), err=True)
        raise
    print(json.dumps(answer, indent=2))
    return Exit.OK


async def _call(
    service: str,
    method: str,
    document: object,
    timeout: float | None,
    schema_name: str | None,
    topic: str | None,
) -> object:
    """Encode ``document`` with the request schema, call, and return the reply as JSON."""
    import asyncio
    import contextlib

    from kit.client import Client
    from kit.config import load_settings
    from kit.errors import DecodeError, EncodeError, SchemaError
    from kit.jsonavro import from_json, to_json
    from kit.registry.model import load_registry_config
    from kit.registry.reader import Registry

    settings = load_settings()
    fail_fast = load_registry_config().fail_fast
    async with contextlib.AsyncExitStack() as stack:
        registry = None
        if fail_fast or not schema_name:  # one registry view serves both uses
            registry = await stack.enter_async_context(Registry(settings, clean=False))
        if (
            registry is not None and schema_name
        ):  # a wrong method fails at once, not at the deadline
            _endpoint_schema(registry, service, method)
        client = await stack.enter_async_context(
            Client(settings, registry=registry if fail_fast else None, fail_fast=fail_fast)
        )
        name = schema_name or _endpoint_schema(registry, service, method)
        if name is None:
            raise InvalidInput(
                f"cannot tell the request schema of {service}.{method}:"
                " pass --schema FULL.NAME (or start the service so the registry lists it)"
            )
        schema = await asyncio.to_thread(client.schema_named, name)
        if schema is None:
            raise SchemaError(f"no schema named {name!r} in schemas/ or the schema topic")
        if client.codec.headers is not None:  # the registry format: its id goes in the value
            await client.ensure_schema(schema)
        try:
            value = client.codec.encode_datum(schema, from_json(schema.parsed, document))
        except EncodeError as exc:
            raise InvalidInput(f"invalid input for {name}: {exc}") from None
        await client.ensure_schema(schema)
        reply = await client.request_raw(
            service, method, value, topic=topic, timeout=timeout, create_topic=False
        )
        try:
            answer = await asyncio.to_thread(client.codec.decode_any, reply.value())
        except DecodeError as exc:
            raise UnreadableReply(f"cannot decode the reply: {exc}") from None
        return to_json(answer)


def _endpoint_schema(registry: Registry | None, service: str, method: str) -> str | None:
    """The request schema of service.method, from the live instances in the registry.

    None when there is no registry view. Raises ServiceUnavailable (exit 5) when the
    registry lists no live instance of the service, and InvalidInput (exit 2), naming the
    methods it does answer, when its instances have no responder `method`.
    """
    from kit.errors import ServiceUnavailable

    if registry is None:
        return None
    instances = registry.lookup(service)
    if not instances:
        raise ServiceUnavailable(service)
    methods: set[str] = set()
    for instance in instances:
        for endpoint in instance.endpoints:
            if endpoint.kind == "responder":
                if endpoint.name == method:
                    return str(endpoint.event_schema)
                methods.add(endpoint.name)
    known = ", ".join(sorted(methods)) or "none"
    raise InvalidInput(f"{service} has no responder {method!r} (its responders: {known})")
