"""The wiring: the extensions a runtime gets by default (discovery, requests), composed here."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kit.config import Settings
from kit.otel import install as install_tracing
from kit.registry import Announcer, Registry, load_registry_config
from kit.requests import LiveCheck
from kit.runtime import Runtime
from kit.service import Service
from kit.transport.requester import Requester

if TYPE_CHECKING:
    from kit.runtime import Extension

__all__ = [
    "Announcing",
    "Requesting",
    "default_extensions",
    "open_registry",
    "run",
    "run_services",
]

log = logging.getLogger("kit.runtime")


async def open_registry(settings: Settings) -> LiveCheck:
    """A started Registry view: what a fail-fast requester consults."""
    registry = Registry(settings)
    await registry.start()
    return registry


class Announcing:
    """Announce the runtime's instance on the registry at its first assignment, heartbeat
    it, and tombstone it after the graceful stop (see kit.registry.Announcer)."""

    async def setup(self, runtime: Runtime) -> None:
        """Attach an Announcer that reuses the runtime's admin client and schema topic."""
        announcer = Announcer.for_runtime(
            runtime,
            admin=runtime.admin,
            schema_topic=runtime.schema_topic,
            listed=getattr(getattr(runtime.transport, "topics", None), "listed", None),
        )
        runtime.announcer = announcer
        await announcer.prepare()
        if not runtime.service.handlers:  # no assignment will come: announce now
            await announcer.start()

    async def stop(self, runtime: Runtime) -> None:
        """Nothing: the tombstone is written by the announcer's on_closed hook."""


class Requesting:
    """Give handlers `ctx.request`: a Requester on the runtime's producer and codec, made
    on first use, failing fast through the registry when KIT_REGISTRY_FAIL_FAST is on."""

    def __init__(self, fail_fast: bool) -> None:
        self.fail_fast = fail_fast
        self.requester: Requester | None = None
        self._runtime: Runtime | None = None

    async def setup(self, runtime: Runtime) -> None:
        """Offer the requester to the runtime's dispatcher (started on first use)."""
        self._runtime = runtime
        runtime.dispatcher.requester = self.get

    async def get(self) -> Requester:
        """The started Requester."""
        runtime = self._runtime
        assert runtime is not None, "Requesting.setup() was not called"
        if self.requester is None:
            self.requester = Requester(
                runtime.settings,
                runtime.codec,
                runtime.producer,
                instance_id=runtime.instance_id,
                registry=runtime.registry,
                fail_fast=self.fail_fast,
                registry_factory=open_registry,
            )
            self.requester.stats = runtime.stats  # calls count with the runtime's handlers
            if runtime.announcer is not None:  # carried from the next heartbeat on
                runtime.announcer.reply_address = self.requester.reply_topic
        await self.requester.start()
        return self.requester

    async def stop(self, runtime: Runtime) -> None:
        """Close the requester: pending calls fail, its reply topic is deleted."""
        if self.requester is not None:
            await self.requester.close()


def default_extensions(settings: Settings) -> list[Extension]:
    """Metrics and health when KIT_METRICS_PORT is set (first, so stopped last), discovery
    when KIT_REGISTRY_ENABLED, and requests; installed by the package as the default of
    every Runtime made without `extensions=`."""
    install_tracing(settings)  # OpenTelemetry spans, if importable and KIT_TRACING is not off
    config = load_registry_config()
    extensions: list[Extension] = []
    if settings.metrics_port is not None:  # imported only then: prometheus-client and all
        from kit.metrics_http import Metrics

        extensions.append(Metrics(settings))
    if config.enabled:
        extensions.append(Announcing())
    extensions.append(Requesting(config.fail_fast))
    return extensions


async def run(service: Service, settings: Settings | None = None, *, signals: bool = True) -> int:
    """Run a service until SIGTERM/SIGINT; returns 0 after a graceful stop within the deadline."""
    return await run_services([service], settings, signals=signals)


async def run_services(
    services: Sequence[Service],
    settings: Settings | None = None,
    *,
    signals: bool = True,
    say: Callable[[str], None] | None = None,
) -> int:
    """Run services in one process (one Runtime each) until SIGTERM/SIGINT.

    Returns 0 after a graceful stop of all within KIT_SHUTDOWN_TIMEOUT, else 1. A runtime
    that fails stops the others, and its error is raised once all have stopped. `say`
    gets one line when each instance is ready (assigned and, with discovery, announced)
    and one when a stop begins, with the records in flight.
    """
    runtimes = [Runtime(service, settings) for service in services]
    stop = asyncio.Event()
    if signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(rt.run(), name=f"kit-runtime-{rt.service.name}") for rt in runtimes
    ]
    watchers = [asyncio.create_task(_say_ready(rt, say)) for rt in runtimes]
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        for rt in runtimes:
            if say is not None and not rt.stopping:
                say(f"stopping {rt.service.name} ({rt.in_flight} records in flight)")
            rt.stop()
        timeout = max(rt.settings.shutdown_timeout for rt in runtimes) + 1
        done, late = await asyncio.wait(tasks, timeout=timeout)
    finally:
        for task in [*watchers, stopped]:
            task.cancel()
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # not None: checked above
    if late:
        log.error("graceful stop exceeded KIT_SHUTDOWN_TIMEOUT=%ss", timeout - 1)
        return 1
    return 0


async def _say_ready(runtime: Runtime, say: Callable[[str], None] | None) -> None:
    """Say once the runtime is assigned and, with discovery on, announced."""
    await runtime.ready.wait()
    announcer = runtime.announcer
    announced = ""
    if announcer is not None:  # announced on the first assignment, by its own task
        # on the broker, so a caller that starts now finds the instance; bounded, and
        # confirmed() warns when it gives up (e.g. the announce task failed, logged)
        ok = await announcer.confirmed(runtime.settings.connect_timeout)
        announced = ", announced" if ok else ", not announced"
    if say is not None:
        parts = len(runtime.assignment)
        say(
            f"{runtime.service.name} ready: instance {runtime.instance_id}, "
            f"{parts} partition{'s' if parts != 1 else ''} assigned{announced}"
        )
