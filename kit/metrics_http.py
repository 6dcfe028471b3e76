"""The HTTP endpoint of a process's runtimes: /metrics, /health/live and /health/ready.

One server per address and process, on its own thread: `kit run` with several services
serves them all on one KIT_METRICS_PORT. The `Metrics` extension (kit.app adds it when
KIT_METRICS_PORT is set) attaches its runtime when the runtime starts, the first one
starting the server, and detaches it at the end of its stop, the last one shutting the
server down (and joining its thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from kit.config import Settings
from kit.errors import ConfigError
from kit.health import LoopWatch, Watched, report
from kit.metrics import ConsumerLag, KitCollector
from kit.telemetry import active
from kit.transport.consumer import KafkaConsumer

if TYPE_CHECKING:
    from kit.runtime import Runtime

__all__ = ["Metrics", "MetricsServer"]

log = logging.getLogger("kit.metrics")


@dataclass
class _Entry:
    watched: Watched
    lag: ConsumerLag


class MetricsServer:
    """A ThreadingHTTPServer on its own thread, serving the runtimes attached to it."""

    def __init__(self, host: str, port: int, stuck_after: float) -> None:
        self.stuck_after = stuck_after
        self.entries: list[_Entry] = []
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KitCollector(self._pairs))
        try:
            self.http = _Http((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                "KIT_METRICS_PORT", f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.http.kit = self
        self.port: int = self.http.server_address[1]
        """The port served (the one picked when KIT_METRICS_PORT is 0)."""
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.2}, name="kit-metrics"
        )
        self.thread.daemon = True
        self.thread.start()
        log.info("metrics and health on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (blocking: off the loop)."""
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)

    def _pairs(self) -> list[tuple[Watched, ConsumerLag]]:
        with self.lock:
            return [(e.watched, e.lag) for e in self.entries]

    def watched(self) -> list[Watched]:
        """The runtimes served now."""
        with self.lock:
            return [e.watched for e in self.entries]

    def metrics(self) -> bytes:
        """The /metrics page."""
        return generate_latest(self.registry)


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    kit: MetricsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Http

    def do_GET(self) -> None:
        """Route /metrics, /health/live and /health/ready; anything else is 404."""
        kit = self.server.kit
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path == "/metrics":
                self._send(200, kit.metrics(), CONTENT_TYPE_PLAIN_0_0_4)
            elif path in ("/health/live", "/health/ready"):
                status, body = report(path.rsplit("/", 1)[1], kit.watched(), kit.stuck_after)
                self._send(status, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /health/live, /health/ready\n")
        except Exception:
            log.exception("serving %s failed", path)
            self._send(500, b"internal error\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Requests go to the kit.metrics logger at DEBUG, not to stderr."""
        log.debug("%s " + format, self.address_string(), *args)


class _Servers:
    """The servers of this process, by (host, port asked for)."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, int], MetricsServer] = {}
        self.lock = threading.Lock()

    def attach(self, settings: Settings, entry: _Entry) -> MetricsServer:
        port = settings.metrics_port
        if port is None:
            raise ConfigError("KIT_METRICS_PORT", "the Metrics extension needs a port")
        key = (settings.metrics_host, port)
        with self.lock:
            server = self.by_address.get(key)
            if server is None:
                server = MetricsServer(*key, settings.health_stuck_after)
                self.by_address[key] = server
            with server.lock:
                server.entries.append(entry)
        return server

    def detach(self, server: MetricsServer, entry: _Entry) -> bool:
        """Detach `entry`; True when it was the server's last (the caller closes it)."""
        with self.lock:
            with server.lock:
                if entry in server.entries:
                    server.entries.remove(entry)
                last = not server.entries
            if last:
                self.by_address = {k: s for k, s in self.by_address.items() if s is not server}
        return last


_servers = _Servers()


class Metrics:
    """Extension: serves the runtime's metrics and health on KIT_METRICS_PORT (see
    kit.metrics for the metrics, kit.health for the checks).

    `setup` attaches the runtime to the process's server (starting it; a port already
    taken raises ConfigError naming KIT_METRICS_PORT), hands the consumer a statistics
    callback (consumer lag) and starts the loop watch; `stop` undoes all three.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: MetricsServer | None = None
        self._entry: _Entry | None = None

    @property
    def port(self) -> int | None:
        """The port served once set up (the one picked when KIT_METRICS_PORT is 0)."""
        return self.server.port if self.server is not None else None

    async def setup(self, runtime: Runtime) -> None:
        """Attach the runtime to the process's server, starting it if needed."""
        entry = _Entry(Watched(runtime, LoopWatch()), ConsumerLag())
        self.server = await asyncio.to_thread(_servers.attach, runtime.settings, entry)
        active.timed = True  # every handler call timed: histograms, the stuck-handler check
        self._entry = entry
        consumer = getattr(runtime, "consumer", None)
        if isinstance(consumer, KafkaConsumer):
            consumer.on_stats = entry.lag.update
        entry.watched.watch.start(f"kit-health-{runtime.instance_id}")

    async def stop(self, runtime: Runtime) -> None:
        """Detach the runtime; the last one out shuts the server down."""
        server, entry = self.server, self._entry
        self.server = self._entry = None
        consumer = getattr(runtime, "consumer", None)
        if isinstance(consumer, KafkaConsumer):
            consumer.on_stats = None
        if entry is not None:
            await entry.watched.watch.stop()
        if server is not None and entry is not None and _servers.detach(server, entry):
            await asyncio.to_thread(server.close)
