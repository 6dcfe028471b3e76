"""The kit's one small error hierarchy: every failure a user can catch is a KitError."""

from __future__ import annotations


class KitError(Exception):
    """Base class of every error the kit raises on purpose."""

    def cli_lines(self) -> list[str]:
        """What a command prints for this error, one line each (after its program name)."""
        return [f"{type(self).__name__}: {self}"]


class ConfigError(KitError):
    """A setting is missing or wrong; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class SchemaError(KitError):
    """A schema file is invalid, or a model and its schema disagree."""


class SchemaRefused(SchemaError):
    """A schema registry refused a writer schema (HTTP 409: incompatible with the versions
    under its subject, or 422: invalid). The message names the subject, the compatibility
    rule, each incompatibility found, and what the registry said."""

    def __init__(
        self,
        schema: str,
        subject: str,
        rule: str,
        incompatibilities: list[str],
        registry_message: str = "",
    ) -> None:
        self.schema = schema
        """The full name of the refused schema."""
        self.subject = subject
        """The subject it was registered under, e.g. "shop.OrderPlaced-value"."""
        self.rule = rule
        """The subject's compatibility rule (BACKWARD, FULL_TRANSITIVE, ...), or "unknown"."""
        self.incompatibilities = incompatibilities
        """Each difference that breaks the rule, e.g. "field 'coupon' has no default"."""
        self.registry_message = registry_message
        """What the registry answered, as it said it."""
        diffs = "; ".join(incompatibilities) or "no incompatibility found locally"
        said = f"; registry said: {registry_message}" if registry_message else ""
        super().__init__(
            f'schema registry refused {schema} for subject "{subject}" '
            f"(compatibility {rule}): {diffs}{said}"
        )


class DecodeError(KitError):
    """A record's bytes could not be decoded into an event."""


class EncodeError(KitError):
    """An event could not be encoded with its schema."""


class BrokerError(KitError):
    """The broker could not be started, reached or used."""


class DeliveryError(KitError):
    """The broker did not confirm delivery of a published record."""


class DeliveryRefused(DeliveryError):
    """The broker refused a record for good (too large for its topic, invalid): sending it
    again cannot succeed. The input record that produced it is dead-lettered."""


class HandlerError(KitError):
    """A handler kept failing after all its retries."""


class RequestError(KitError):
    """Base class of the errors a synchronous request can end with."""


class RequestTimeout(RequestError):
    """No reply arrived before the request's deadline."""

    def __init__(self, service: str, method: str, correlation_id: str, waited: float) -> None:
        self.service = service
        self.method = method
        self.correlation_id = correlation_id
        self.waited = waited
        super().__init__(
            f"request {service}.{method} timed out after {waited:.3f}s "
            f"(correlation id {correlation_id})"
        )


class RemoteError(RequestError):
    """The responder raised; carries the remote exception's type and message."""

    def __init__(
        self,
        service: str,
        method: str,
        error_type: str,
        message: str,
        correlation_id: str = "",
        remote_traceback: str | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.error_type = error_type
        self.message = message
        self.correlation_id = correlation_id
        self.remote_traceback = remote_traceback
        super().__init__(f"{service}.{method} raised {error_type}: {message}")


class ServiceUnavailable(RequestError):
    """No live instance of the requested service is registered."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(f"no live instance of service {service!r} is registered")
