"""A SASL/SCRAM broker with ACLs for one test module, and principals with exact ACLs.

Use it from a test module with ``from tests.integration.sasl_broker import sasl_broker``
(the fixture is module-scoped: each module gets its own broker, data dir and port).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from kit.broker import local
from kit.broker.process import free_port

__all__ = ["Acl", "Principal", "add_principal", "grant", "sasl_broker", "use_principal"]


def _free_port() -> int:
    return free_port()  # below the ephemeral range: no connection takes it meanwhile


@contextlib.contextmanager
def _broker_env(data_dir: Path, port: int) -> Iterator[None]:
    """Point kit.broker.local at our own data dir and port, only for the calls inside."""
    saved = {k: os.environ.get(k) for k in ("KIT_BROKER_DIR", "KIT_BROKER_PORT")}
    os.environ.update(KIT_BROKER_DIR=str(data_dir), KIT_BROKER_PORT=str(port))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.BrokerInfo]:
    """A single-node SASL_PLAINTEXT/SCRAM-SHA-512 broker with ACLs, of this module only."""
    data_dir = tmp_path_factory.mktemp("sasl-broker")
    port = _free_port()
    with _broker_env(data_dir, port):
        info = local.start(port, timeout=120, sasl=True)
    try:
        yield info
    finally:
        with _broker_env(data_dir, port):
            local.stop()


@dataclass(frozen=True)
class Acl:
    """One ALLOW from any host, in kafka-acls terms: ("Topic", "literal", "orders", "Read")."""

    resource: str
    pattern: str
    name: str
    operation: str

    def binding(self, principal: str) -> AclBinding:
        """The confluent-kafka binding of this ACL for `principal` (User:<name>)."""
        kind = {"topic": "TOPIC", "group": "GROUP", "transactionalid": "TRANSACTIONAL_ID"}
        operation = "".join(f"_{c}" if c.isupper() else c for c in self.operation).strip("_")
        return AclBinding(
            ResourceType[kind[self.resource.lower()]],
            self.name,
            ResourcePatternType[self.pattern.upper()],
            principal,
            "*",
            AclOperation[operation.upper()],
            AclPermissionType.ALLOW,
        )

    def __str__(self) -> str:
        return f"{self.resource}:{self.pattern}:{self.name}:{self.operation}"


@dataclass(frozen=True)
class Principal:
    """A SCRAM user and its password."""

    user: str
    password: str


def grant(info: local.BrokerInfo, user: str, acls: Iterable[Acl], timeout: float = 30) -> None:
    """Create the ACLs for User:<user> as the super user; return once the broker shows them."""
    principal = f"User:{user}"
    bindings = [acl.binding(principal) for acl in dict.fromkeys(acls)]  # once each
    admin = AdminClient(info.client_config())
    if bindings:
        for future in admin.create_acls(bindings, request_timeout=timeout).values():
            future.result(timeout=timeout)
    anything = None
    everything = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        principal,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            present = set(admin.describe_acls(everything, request_timeout=5).result(timeout=5))
        except Exception:
            present = set()
        if all(binding in present for binding in bindings):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker did not show the ACLs of {principal} in time")
        time.sleep(0.05)


def add_principal(info: local.BrokerInfo, acls: Iterable[Acl], prefix: str = "u") -> Principal:
    """A new SCRAM user (a fresh name each call) with exactly `acls`."""
    user = f"{prefix}-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    local.add_scram_user(user, password, info=info)
    grant(info, user, acls)
    return Principal(user, password)


def use_principal(
    monkeypatch: pytest.MonkeyPatch, info: local.BrokerInfo, principal: Principal
) -> dict[str, str]:
    """Make kit in this process connect to `info` as `principal` (KIT_KAFKA_* from the
    environment, as kit reads them); returns the variables set, e.g. for a child process."""
    for key in [k for k in os.environ if k.startswith("KIT_KAFKA_")]:
        monkeypatch.delenv(key)
    env = {
        "KIT_BOOTSTRAP_SERVERS": info.bootstrap_servers,
        "KIT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KIT_KAFKA_SASL_MECHANISM": local.SASL_MECHANISM,
        "KIT_KAFKA_SASL_USERNAME": principal.user,
        "KIT_KAFKA_SASL_PASSWORD": principal.password,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
