"""``python -m kit.cli ...``: the ``kit`` command, for processes spawned by tests and tools."""

import sys

from kit.cli import main

sys.exit(main())
