"""``python -m openraft_py.testing.lincheck``: see ``openraft_py.testing.lincheck.cli``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
