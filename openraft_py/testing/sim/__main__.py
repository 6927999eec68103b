"""``python -m openraft_py.testing.sim``: see ``openraft_py.testing.sim.cli``."""

import sys

from ..._cli import run_cli
from .cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
