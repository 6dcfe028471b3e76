"""Shared test set-up: the kit pytest plugin, also when kit is not installed (PYTHONPATH)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    """Load kit.testing.plugin unless its entry point (installed kit) already did."""
    manager = config.pluginmanager
    if not manager.has_plugin("kit") and not manager.has_plugin("kit.testing.plugin"):
        manager.import_plugin("kit.testing.plugin")
