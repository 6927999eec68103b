"""``python -m openraft_py.kv``: the ``openraft-py`` command line (see ``openraft_py.kv.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
