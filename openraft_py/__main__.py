"""``python -m openraft_py``: the ``openraft-py`` command line, as ``python -m
openraft_py.kv`` (see ``openraft_py.kv.cli``): for an environment whose scripts directory is
not on ``PATH``."""

import sys

from .kv.cli import main

if __name__ == "__main__":
    sys.exit(main())
