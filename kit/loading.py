"""Find a Service by name: `module:attribute` as `kit run` and `kit replay --shadow` take it."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping

from kit.errors import ConfigError
from kit.service import Service

__all__ = ["load_service", "services_in"]


def load_service(target: str) -> Service:
    """Import `module:attribute` and return the Service it names.

    A wrong target raises ConfigError (setting ``SERVICE``) saying what is wrong: no
    colon, a module that cannot be imported, an attribute the module does not have, or one
    that is not a Service; the last two list the Services the module does have. The
    current directory is importable, as it is for ``python -m``.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError("SERVICE", f"expected module:service, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError("SERVICE", f"cannot import {module_name!r}: {exc}") from None
    found = services_in(vars(module))
    if not hasattr(module, attr):
        problem = f"{target!r}: module {module_name!r} has no attribute {attr!r}"
        raise ConfigError("SERVICE", f"{problem}; {_listing(module_name, found)}")
    service = getattr(module, attr)
    if not isinstance(service, Service):
        problem = f"{target!r} is not a kit.Service (got {type(service).__name__})"
        raise ConfigError("SERVICE", f"{problem}; {_listing(module_name, found)}")
    return service


def services_in(namespace: Mapping[str, object]) -> dict[str, Service]:
    """The Services a module defines or imports, by attribute name (private names left out)."""
    return {
        name: value
        for name, value in sorted(namespace.items())
        if isinstance(value, Service) and not name.startswith("_")
    }


def _listing(module_name: str, found: dict[str, Service]) -> str:
    if not found:
        return f"{module_name!r} has no kit.Service"
    names = ", ".join(f"{module_name}:{attr} ({svc.name})" for attr, svc in found.items())
    return f"its kit.Service{'s' if len(found) > 1 else ''}: {names}"
