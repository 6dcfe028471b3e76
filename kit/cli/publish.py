"""``kit publish TOPIC --json '{...}'``: publish one typed event from the shell."""

from __future__ import annotations

import click

from kit.cli.errors import Exit, InvalidInput, guarded

__all__ = ["publish"]


@click.command("publish", short_help="Publish one typed event: kit publish TOPIC --json.")
@click.argument("topic")
@click.option("--json", "payload", required=True, help="the event as a JSON object")
@click.option("--key", default=None, help="the record key (text)")
@click.option(
    "--schema", default=None, help="the event's schema full name (default: TOPIC, kit's default)"
)
@click.option("--create", is_flag=True, help="create TOPIC if it does not exist")
@guarded("kit publish")
def publish(topic: str, payload: str, key: str | None, schema: str | None, create: bool) -> int:
    """Publish one event to TOPIC, validated against its schema, and wait for the broker.

    The schema is --schema, else TOPIC itself (a handler's topic defaults to its event's
    schema full name). Exit 0 once the broker confirmed it; 2 bad input, unknown schema
    or a missing topic without --create.
    """
    import asyncio
    import json

    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise InvalidInput(f"--json is not valid JSON: {exc}") from None
    asyncio.run(_publish(topic, document, key, schema or topic, create))
    print(f"published 1 event ({schema or topic}) to {topic}")
    return Exit.OK


async def _publish(
    topic: str, document: object, key: str | None, schema_name: str, create: bool
) -> None:
    import asyncio

    from kit.client import Client
    from kit.config import load_settings
    from kit.errors import EncodeError
    from kit.jsonavro import from_json
    from kit.topics import topic_exists

    settings = load_settings()
    async with Client(settings) as client:
        schema = await asyncio.to_thread(client.schema_named, schema_name)
        if schema is None:
            raise InvalidInput(
                f"no schema named {schema_name!r} in schemas/ or the schema topic:"
                " pass --schema FULL.NAME"
            )
        if client.codec.headers is not None:  # the registry format: its id goes in the value
            await client.ensure_schema(schema, topic)
        try:
            value = client.codec.encode_datum(schema, from_json(schema.parsed, document))
        except EncodeError as exc:
            raise InvalidInput(f"invalid input for {schema.full_name}: {exc}") from None
        if not create and not await asyncio.to_thread(topic_exists, settings, topic):
            raise InvalidInput(
                f"no topic {topic!r} (start the service that reads it, or pass --create)"
            )
        await client.ensure_schema(schema, topic)
        await client.publish_raw(topic, value, key=key)
