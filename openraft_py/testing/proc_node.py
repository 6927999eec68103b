"""The former name of ``openraft_py.testing.proc.node``, kept for its callers, including
``python -m openraft_py.testing.proc_node`` (the same command line)."""

from __future__ import annotations

import sys

from .proc.node import NodeOptions, load_options, main, metrics_dict, parse_peers, tune_gc, value_of

__all__ = ["NodeOptions", "load_options", "main", "metrics_dict", "parse_peers", "tune_gc", "value_of"]

if __name__ == "__main__":
    sys.exit(main())
