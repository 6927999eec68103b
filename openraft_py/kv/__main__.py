"""``python -m openraft_py.kv ...``: the ``openraft-py`` command line without the console
script (``openraft_py.kv.cli.main``), e.g. ``python -m openraft_py.kv serve --id 1 ...``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
