"""Service discovery on a compacted Kafka topic: announce, heartbeat, look up, watch.

Every running instance owns one key (its instance id) on the registry topic
(KIT_REGISTRY_TOPIC, default `_kit_registry`); the value is an Avro `kit.Registration`,
and a null value (tombstone) removes it. `Announcer` writes and heartbeats one instance;
`Registry` reads the topic into memory and serves lookups and watch events; an instance
whose last heartbeat is older than the TTL counts as gone. See docs/discovery.md.
"""

from kit.registry.announcer import Announcer
from kit.registry.model import (
    Endpoint,
    Registration,
    RegistryConfig,
    endpoints_of,
    load_registry_config,
    registry_topic_spec,
)
from kit.registry.reader import Registry
from kit.registry.view import RegistryEvent, RegistryView
from kit.registry.watch import Watch

__all__ = [
    "Announcer",
    "Endpoint",
    "Registration",
    "Registry",
    "RegistryConfig",
    "RegistryEvent",
    "RegistryView",
    "Watch",
    "endpoints_of",
    "load_registry_config",
    "registry_topic_spec",
]
