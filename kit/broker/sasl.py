"""SASL/SCRAM and ACLs of the local broker: properties, the admin password, users and ACLs.

With ``sasl=True`` (``kit broker start --sasl``) the client listener is SASL_PLAINTEXT with
SCRAM-SHA-512 and ACLs are enforced by KRaft's StandardAuthorizer:

- the super user ``admin`` gets its password from ``KIT_BROKER_ADMIN_PASSWORD`` or a
  generated one; its SCRAM credential is written into the metadata log when the storage is
  formatted (``StorageTool format --add-scram``), so the broker can authenticate to itself;
- brokers talk to each other (inter-broker: replication, transaction markers) over the SASL
  listener as ``admin``;
- the controller listener stays PLAINTEXT on 127.0.0.1, where a broker's own principal is
  ``User:ANONYMOUS``; the controller authorizes broker registration and forwarded requests
  with that principal, so it is a super user too. Anyone who can reach a controller port
  on this host is therefore a super user: this is a local development broker.

A data dir keeps the mode it was formatted with (``sasl.json`` beside the data, mode 0600);
starting it in the other mode is refused. :func:`add_scram_user` and :func:`add_acls` add
users and ACLs as the super user, for tests.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.broker.files import broker_dir, write_private
from kit.broker.process import admin
from kit.config import load_tool_settings
from kit.errors import BrokerError, ConfigError

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AdminClient

    from kit.broker.info import BrokerInfo

__all__ = [
    "ADMIN_USER",
    "SASL_MECHANISM",
    "add_acls",
    "add_scram_user",
    "connect_lines",
    "sasl_settings",
    "scram_format_args",
]

SASL_MECHANISM = "SCRAM-SHA-512"
"""The SASL mechanism of a broker started with ``sasl=True``."""

ADMIN_USER = "admin"
"""The super user of a SASL broker; its password: ``KIT_BROKER_ADMIN_PASSWORD`` or generated."""

_PASSWORD_CHARS = re.compile(r"[A-Za-z0-9._~!@#$%^&*+:;?/-]+")  # safe in JAAS, --add-scram


def sasl_settings(admin_password: str) -> dict[str, str]:
    """The ``server.properties`` entries of a SASL_PLAINTEXT client listener with ACLs."""
    login = "org.apache.kafka.common.security.scram.ScramLoginModule"
    return {
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        f"listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config": (
            f'{login} required username="{ADMIN_USER}" password="{admin_password}";'
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # User:ANONYMOUS is a broker itself on the PLAINTEXT controller listener.
        "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_format_args(admin_password: str | None) -> tuple[str, ...]:
    """The StorageTool arguments that put the super user's credential into the metadata log."""
    if admin_password is None:
        return ()
    return ("--add-scram", f"{SASL_MECHANISM}=[name={ADMIN_USER},password={admin_password}]")


def _sasl_file(data_dir: Path) -> Path:
    return data_dir / "sasl.json"


def _admin_password(
    data_dir: Path, sasl: bool | None, *, formatted: bool | None = None
) -> str | None:
    """The super user's password if this start is SASL, else None; checks the data's mode.

    ``sasl=None`` follows the data dir (plain for a fresh one). ``formatted`` says whether
    the data dir holds formatted storage (default: a single node's ``kraft-logs``).
    """
    if formatted is None:
        formatted = (data_dir / "kraft-logs" / "meta.properties").is_file()
    try:
        saved = json.loads(_sasl_file(data_dir).read_text())["admin_password"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = None
    wanted = load_tool_settings().broker_admin_password
    if formatted:
        if saved is None and sasl:
            raise BrokerError(
                f"the broker data in {data_dir} was formatted without SASL; "
                "set KIT_BROKER_DIR to another folder for a SASL broker"
            )
        if saved is not None and sasl is False:
            raise BrokerError(
                f"the broker data in {data_dir} was formatted for SASL; start it with --sasl, "
                "or set KIT_BROKER_DIR to another folder"
            )
        if saved is not None and wanted is not None and wanted != saved:
            raise ConfigError(
                "KIT_BROKER_ADMIN_PASSWORD",
                f"differs from the admin password the broker data in {data_dir} was "
                "formatted with; unset it, or set KIT_BROKER_DIR to another folder",
            )
        return str(saved) if saved is not None else None
    if not sasl:
        _sasl_file(data_dir).unlink(missing_ok=True)  # left by a format that never finished
        return None
    password = wanted or saved or secrets.token_urlsafe(18)
    if not _PASSWORD_CHARS.fullmatch(password):
        raise ConfigError(
            "KIT_BROKER_ADMIN_PASSWORD",
            "use only letters, digits and ._~!@#$%^&*+:;?/- (no spaces, quotes, commas, "
            "brackets or backslashes)",
        )
    record = {"mechanism": SASL_MECHANISM, "admin_user": ADMIN_USER, "admin_password": password}
    write_private(_sasl_file(data_dir), json.dumps(record, indent=2) + "\n")
    return str(password)


def connect_lines(info: BrokerInfo) -> list[str]:
    """How to connect kit to a SASL broker, as shell lines."""
    lines = [
        f"SASL_PLAINTEXT with {SASL_MECHANISM} and ACLs (StandardAuthorizer); "
        f"super user {ADMIN_USER!r}. Connect kit as the super user with:"
    ]
    lines += [f"  export {key}={shlex.quote(value)}" for key, value in info.client_env().items()]
    return lines


# -- users and ACLs (as the super user) --------------------------------------------------


class _Default:
    """The broker `add_scram_user` and `add_acls` act on when given no `info`: the local
    broker, whose lookup kit.broker.local installs here (this module sits below it)."""

    def __init__(self) -> None:
        self.status: Callable[[], BrokerInfo | None] = lambda: None


default = _Default()


def _sasl_admin(info: BrokerInfo | None) -> AdminClient:
    info = info or default.status()
    if info is None or not info.sasl:
        raise BrokerError(f"no SASL broker runs from {broker_dir()}; run `kit broker start --sasl`")
    return admin(info.bootstrap_servers, info.client_config())


def _settle(check: Callable[[], bool], deadline: float, what: str) -> None:
    """Wait until ``check()`` is true: the controller commits first, the broker applies after."""
    while not check():
        if time.monotonic() >= deadline:
            raise BrokerError(f"the broker did not show {what} in time")
        time.sleep(0.05)


def add_scram_user(
    name: str, password: str, *, info: BrokerInfo | None = None, timeout: float = 30.0
) -> None:
    """Create (or re-password) the SCRAM-SHA-512 user ``name`` on a SASL broker.

    Runs as the super user on ``info`` (default: the running local broker) and returns once
    the broker accepts the credential. Raises BrokerError if no SASL broker runs.
    """
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    client = _sasl_admin(info)
    deadline = time.monotonic() + timeout
    upsert = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for future in client.alter_user_scram_credentials([upsert], request_timeout=timeout).values():
        future.result(timeout=timeout)

    def known() -> bool:
        try:
            found = client.describe_user_scram_credentials([name], request_timeout=5)
            assert isinstance(found, dict)  # asked for a list of users; the stubs allow a Future
            return bool(found[name].result(timeout=5).scram_credential_infos)
        except Exception:
            return False

    _settle(known, deadline, f"user {name!r}")


def add_acls(
    user: str,
    *,
    topics: Iterable[str] = (),
    groups: Iterable[str] = (),
    cluster: Iterable[str] = (),
    operations: Iterable[str] = ("ALL",),
    prefixed: bool = False,
    info: BrokerInfo | None = None,
    timeout: float = 30.0,
) -> None:
    """Allow ``User:<user>`` each of ``operations`` (READ, WRITE, DESCRIBE, CREATE, ALL, ...)
    on each topic and group named, from any host; ``cluster`` lists operations on the cluster
    itself (e.g. ``("CREATE",)`` to create topics). ``prefixed=True`` makes the topic and group
    names prefixes. Runs as the super user on ``info`` (default: the running local broker) and
    returns once the broker enforces them. Raises BrokerError if no SASL broker runs.
    """
    principal = f"User:{user}"
    bindings = _allow_bindings(principal, topics, groups, cluster, operations, prefixed)
    if not bindings:
        return
    client = _sasl_admin(info)
    deadline = time.monotonic() + timeout
    for future in client.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    everything = _acls_of(principal)

    def enforced() -> bool:
        try:
            present = set(client.describe_acls(everything, request_timeout=5).result(timeout=5))
        except Exception:
            return False
        return all(binding in present for binding in bindings)

    _settle(enforced, deadline, f"the ACLs of {principal}")


def _allow_bindings(
    principal: str,
    topics: Iterable[str],
    groups: Iterable[str],
    cluster: Iterable[str],
    operations: Iterable[str],
    prefixed: bool,
) -> list[AclBinding]:
    """ALLOW bindings from any host: each of ``operations`` on each topic and group, and each
    operation in ``cluster`` on the cluster."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
    allow = AclPermissionType.ALLOW
    wanted = [(ResourceType.TOPIC, t) for t in topics] + [(ResourceType.GROUP, g) for g in groups]
    bindings = [
        AclBinding(kind, name, pattern, principal, "*", AclOperation[op.upper()], allow)
        for kind, name in wanted
        for op in operations
    ]
    bindings += [
        AclBinding(
            ResourceType.BROKER,
            "kafka-cluster",
            ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation[op.upper()],
            allow,
        )
        for op in cluster
    ]
    return bindings


def _acls_of(principal: str) -> AclBindingFilter:
    """A filter that matches every ACL of ``principal``."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    anything: Any = None  # Any: the stubs say str, but a filter field of None matches any value
    return AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        principal,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
