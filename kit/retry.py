"""When a failed handler call is tried again: a transient error for a time, others N times."""

from __future__ import annotations

import logging

from kit.config import Settings
from kit.errors import DeliveryError, RequestTimeout, ServiceUnavailable
from kit.service import Handler

__all__ = ["TRANSIENT_ERRORS", "Abandoned", "retry_delay"]

log = logging.getLogger("kit.dispatch")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ServiceUnavailable, RequestTimeout, DeliveryError)
"""Failures of a dependency that a later attempt may not meet: retried for a time
(KIT_TRANSIENT_TIMEOUT, or the handler's `transient_timeout`), not a number of times."""


class Abandoned(Exception):
    """A record's handling was given up because the runtime is stopping (it stays
    uncommitted, so it is handled again after the restart)."""


def retry_delay(
    settings: Settings,
    service: str,
    handler: Handler,
    error: Exception,
    attempt: int,
    retries: int,
    transient_for: float,
    failing_for: float,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the retries are spent: a
    transient error is retried while it lasts less than `transient_for`, any other
    `retries` times, with exponential backoff."""
    transient = isinstance(error, TRANSIENT_ERRORS) and transient_for > 0
    if (transient and failing_for >= transient_for) or (not transient and attempt > retries):
        return None
    delay = min(
        settings.retry_backoff * (2.0 ** min(attempt - 1, 30)),
        settings.retry_backoff_max,
    )
    if transient:  # never sleep past the end of the window
        delay = max(0.0, min(delay, transient_for - failing_for))
    log.warning(
        "%s.%s attempt %d failed (%s: %s); retrying in %.2fs%s",
        service,
        handler.name,
        attempt,
        type(error).__name__,
        error,
        delay,
        f" (transient, for up to {transient_for:g}s)" if transient else "",
    )
    return delay
