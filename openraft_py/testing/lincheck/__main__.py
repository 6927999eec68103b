"""``python -m openraft_py.testing.lincheck``: see ``openraft_py.testing.lincheck.cli``."""

import sys

from ..._cli import run_cli
from .cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
