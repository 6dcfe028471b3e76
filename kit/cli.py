"""The `kit` command: run services, manage the local broker, check schemas."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from kit.command import configure_logging, run_command
from kit.errors import ConfigError
from kit.service import Service

__all__ = ["load_service", "main"]


def load_service(target: str) -> Service:
    """Import `module:attribute` and return the Service it names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError("SERVICE", f"expected module:service, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError("SERVICE", f"cannot import {module_name!r}: {exc}") from None
    service = getattr(module, attr, None)
    if not isinstance(service, Service):
        raise ConfigError(
            "SERVICE", f"{target!r} is not a kit.Service (got {type(service).__name__})"
        )
    return service


def _cmd_run(args: argparse.Namespace) -> int:
    from kit.config import load_settings, resolve_bootstrap
    from kit.runtime import run

    settings = load_settings()
    service = load_service(args.target)
    bootstrap, source = resolve_bootstrap(settings)
    print(
        f"kit: running {service.name} {service.version} against {bootstrap} ({source})", flush=True
    )
    return asyncio.run(run(service, settings))


def _cmd_schemas(args: argparse.Namespace) -> int:
    from kit.schema import SchemaRepository

    root = Path(args.dir or os.environ.get("KIT_SCHEMAS_DIR") or "schemas")
    repo = SchemaRepository(root)
    for problem in repo.problems:
        print(f"error: {problem}")
    if repo.problems:
        print(f"{len(repo.problems)} problem(s) in {root}")
        return 1
    names = sorted(s.full_name for s in repo)
    for schema in sorted(repo, key=lambda s: s.full_name):
        print(f"ok  {schema.full_name:40} {schema.fingerprint.hex()}  {schema.source}")
    print(f"{len(names)} schema(s) in {root} are valid")
    return 0


def _cmd_request(args: argparse.Namespace) -> int:
    """kit request SERVICE METHOD --json '{...}'.

    Exit 0 with the reply; 2 bad input, 3 timeout, 4 remote error, 5 no live instance.
    """
    import contextlib
    import json

    from kit.client import Client
    from kit.config import load_settings
    from kit.errors import (
        DecodeError,
        EncodeError,
        RemoteError,
        RequestTimeout,
        SchemaError,
        ServiceUnavailable,
    )
    from kit.jsonavro import from_json, to_json
    from kit.registry import Registry, load_registry_config

    try:
        payload = json.loads(args.json)
    except ValueError as exc:
        print(f"kit request: --json is not valid JSON: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()

    fail_fast = load_registry_config().fail_fast

    async def call() -> int:
        async with contextlib.AsyncExitStack() as stack:
            registry = None
            if fail_fast or not args.schema:  # one registry view serves both uses
                registry = await stack.enter_async_context(Registry(settings, clean=False))
            client = await stack.enter_async_context(
                Client(settings, registry=registry if fail_fast else None, fail_fast=fail_fast)
            )
            name = args.schema or _endpoint_schema(registry, args.service, args.method)
            if name is None:
                print(
                    f"kit request: cannot tell the request schema of {args.service}.{args.method}:"
                    " pass --schema FULL.NAME (or start the service so the registry lists it)",
                    file=sys.stderr,
                )
                return 2
            schema = await asyncio.to_thread(client.schema_named, name)
            if schema is None:
                raise SchemaError(f"no schema named {name!r} in schemas/ or the schema topic")
            try:
                value = client.codec.encode_datum(schema, from_json(schema.parsed, payload))
            except EncodeError as exc:
                print(f"kit request: invalid input for {name}: {exc}", file=sys.stderr)
                return 2
            await client.ensure_schema(schema)
            try:
                reply = await client.request_raw(
                    args.service,
                    args.method,
                    value,
                    topic=args.topic,
                    timeout=args.timeout,
                )
            except RequestTimeout as exc:
                print(f"kit request: {exc}", file=sys.stderr)
                return 3
            except RemoteError as exc:
                print(f"kit request: remote error: {exc}", file=sys.stderr)
                return 4
            except ServiceUnavailable as exc:
                print(f"kit request: {exc}", file=sys.stderr)
                return 5
            try:
                answer = await asyncio.to_thread(client.codec.decode_any, reply.value())
            except DecodeError as exc:
                print(f"kit request: cannot decode the reply: {exc}", file=sys.stderr)
                return 4
            print(json.dumps(to_json(answer), indent=2))
            return 0

    return asyncio.run(call())


def _endpoint_schema(registry: Any, service: str, method: str) -> str | None:
    """The request schema of service.method, from the live instances in the registry."""
    for instance in registry.lookup(service):
        for endpoint in instance.endpoints:
            if endpoint.kind == "responder" and endpoint.name == method:
                return str(endpoint.event_schema)
    return None


def _cmd_broker(argv: list[str]) -> int:
    from kit.broker.local import cli_main

    return cli_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kit` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "broker":
        return _cmd_broker(argv[1:])
    if argv and argv[0] == "replay" and any(a.startswith("--shadow") for a in argv):
        from kit.replay.shadow import cli_shadow

        return cli_shadow(argv[1:])
    if argv and argv[0] == "services":
        from kit.registry import cli_services

        return cli_services(argv[1:])
    if argv and argv[0] == "replies":
        from kit.replies import cli_replies

        return cli_replies(argv[1:])
    if argv and argv[0] in ("record", "replay"):
        from kit.replay import cli_record, cli_replay

        return (cli_record if argv[0] == "record" else cli_replay)(argv[1:])
    parser = argparse.ArgumentParser(prog="kit", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("KIT_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a service: kit run module:service")
    p_run.add_argument("target", help="module:attribute naming a kit.Service")
    p_run.set_defaults(func=_cmd_run)
    sub.add_parser("broker", help="start | stop | status the local Kafka broker")
    sub.add_parser("record", help="record topics to a file: kit record TOPIC... -o FILE")
    sub.add_parser(
        "replay", help="republish a recording (kit replay FILE) or diff a new version (--shadow)"
    )
    sub.add_parser("services", help="list live service instances (--json, --watch)")
    sub.add_parser("replies", help="kit replies prune: delete reply topics of dead requesters")
    p_req = sub.add_parser("request", help="call a responder: kit request SERVICE METHOD --json")
    p_req.add_argument("service")
    p_req.add_argument("method")
    p_req.add_argument("--json", required=True, help="the request as a JSON object")
    p_req.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p_req.add_argument("--schema", help="request schema full name (default: from the registry)")
    p_req.add_argument("--topic", help="request topic (default: SERVICE.METHOD)")
    p_req.set_defaults(func=_cmd_request)
    p_schemas = sub.add_parser("schemas", help="schema tools")
    schemas_sub = p_schemas.add_subparsers(dest="action", required=True)
    p_check = schemas_sub.add_parser("check", help="validate every .avsc file")
    p_check.add_argument(
        "dir", nargs="?", help="schema folder (default: KIT_SCHEMAS_DIR or ./schemas)"
    )
    p_check.set_defaults(func=_cmd_schemas)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run_command("kit", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
