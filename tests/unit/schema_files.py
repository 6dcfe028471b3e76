"""Helpers for tests that write .avsc files."""

from __future__ import annotations

import json
from pathlib import Path


def write(root: Path, name: str, schema: object) -> Path:
    """Write `schema` as JSON to root/<name>.avsc (folders made) and return the path."""
    path = root / f"{name}.avsc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))
    return path


def record(name: str, fields: list[dict[str, object]], namespace: str = "v") -> dict[str, object]:
    """An Avro record schema."""
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields}
