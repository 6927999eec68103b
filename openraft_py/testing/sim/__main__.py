"""``python -m openraft_py.testing.sim``: see ``openraft_py.testing.sim.cli``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
