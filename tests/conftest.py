"""Shared test helpers; fixtures come from the kit pytest plugin (kit.testing.plugin)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["kit.testing.plugin"]
