"""The examples' tests: each example directory is put on ``sys.path`` so its modules import
as they do when its ``main.py`` runs (``python examples/<name>/main.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
"""The repository's ``examples/`` directory."""

for _example in ("sqlite_storage", "aiohttp_service", "lock_service"):
    _dir = str(EXAMPLES / _example)
    if _dir not in sys.path:
        sys.path.insert(0, _dir)
