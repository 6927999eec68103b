"""The node process of ``bench/tcp.py``: ``openraft_py.testing.proc.node`` unchanged, except
that the latency percentiles of its ``bulk`` operation also carry ``"p999"`` (the 99.9th
percentile, ms), which ``make bench`` reports for every point.

``bench/tcp.py`` starts it through ``ProcCluster(python=...)`` with a launcher script that
drops the ``-m openraft_py.testing.proc.node`` the cluster passes and runs this file with the
same options (see ``write_launcher``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_launcher(directory: Path) -> str:
    """Write an executable ``node-launcher`` into ``directory`` and return its path, to pass as
    ``ProcCluster(python=...)``: it runs this file under this interpreter with the node's
    options (the ``-m MODULE`` before them is dropped)."""
    path = directory / "node-launcher"
    path.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "-m" ] && shift 2\n'
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "$@"\n'
    )
    path.chmod(0o755)
    return str(path)


def main() -> int:
    """Run the proc node with the p99.9-reporting percentiles."""
    sys.path.insert(0, str(ROOT))
    import openraft_py.testing.proc.node as node
    from bench.common import percentiles_ms

    base = getattr(node, "_percentiles", None)
    if base is not None:  # without it (a refactored harness), the node runs as is: no p999

        def with_p999(samples: list[float]) -> dict[str, float]:
            out = dict(base(samples))
            if samples:
                out["p999"] = percentiles_ms(samples)["p999"]
            return out

        node._percentiles = with_p999
    return node.main()


if __name__ == "__main__":
    sys.exit(main())
