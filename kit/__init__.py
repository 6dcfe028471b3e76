"""kit: Avro-typed event-driven services on Apache Kafka."""

from kit.app import default_extensions, run
from kit.broker.local import running_address
from kit.client import Client
from kit.codec import Codec
from kit.config import Settings, install_local_broker, load_settings
from kit.dispatch import Context
from kit.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    DeliveryError,
    EncodeError,
    KitError,
    RemoteError,
    RequestError,
    RequestTimeout,
    SchemaError,
    SchemaRefused,
    ServiceUnavailable,
)
from kit.event import Event
from kit.runtime import Runtime, install_default_extensions
from kit.schema import Schema, SchemaRepository
from kit.service import Endpoint, Service

# The composition root: every Runtime gets discovery and requests unless told otherwise,
# and a client without KIT_BOOTSTRAP_SERVERS finds the broker `kit broker start` runs.
install_default_extensions(default_extensions)
install_local_broker(running_address)

__all__ = [
    "BrokerError",
    "Client",
    "Codec",
    "ConfigError",
    "Context",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "Endpoint",
    "Event",
    "KitError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "Runtime",
    "Schema",
    "SchemaError",
    "SchemaRefused",
    "SchemaRepository",
    "Service",
    "ServiceUnavailable",
    "Settings",
    "load_settings",
    "run",
]

__version__ = "0.1.0"
