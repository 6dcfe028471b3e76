"""Registry figures: announce → visible in another process, eviction after kill -9, lookup cost.

Run (broker: `python -m kit.cli broker start`):
    PYTHONPATH=. python -m bench.registry [samples=20]
The measuring code is shared with the registry's integration tests
(tests/integration/test_registry.py, `bench_main`), which start real service processes.
"""

from __future__ import annotations

import json
import sys

from tests.integration.test_registry import bench_main

if __name__ == "__main__":
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(json.dumps(bench_main(samples), indent=2))
