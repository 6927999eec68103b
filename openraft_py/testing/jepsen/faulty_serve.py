"""TEST ONLY: run ``serve`` with engine bug switches on, to prove the Jepsen runner catches bugs.

``python -m openraft_py.testing.jepsen.faulty_serve [serve flags]`` is ``openraft-py serve``
plus one thing: the engine fault names in the environment variable
``OPENRAFT_PY_TEST_FAULTS`` (comma separated; the names of ``openraft_py.engine.faults.
EngineFault``) are switched on with ``faults.inject`` in the node's engine right after
``Raft.new`` returns, before the node's transport starts (so before any election). Each of
these faults breaks a Raft safety rule on purpose. Nothing outside the Jepsen runner starts
this module, and the production ``serve`` never reads the variable.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["ENV", "faults_from_env", "install", "main"]

ENV = "OPENRAFT_PY_TEST_FAULTS"
"""The environment variable naming the faults to switch on."""


def faults_from_env() -> set[str]:
    """The fault names in ``OPENRAFT_PY_TEST_FAULTS``; ``ValueError`` for an unknown name."""
    from ...engine.faults import parse_faults

    names = {x.strip() for x in os.environ.get(ENV, "").split(",") if x.strip()}
    try:
        parse_faults(names)
    except ValueError as e:
        raise ValueError(f"{ENV}: {e}") from None
    return names


def install(faults: set[str]) -> None:
    """Wrap ``Raft.new`` in this process so every new ``Raft`` gets ``faults`` switched on."""
    from ...engine.faults import inject
    from ...raft import Raft

    original = Raft.new.__func__  # type: ignore[attr-defined]

    async def new(cls: type[Raft], *args: Any, **kwargs: Any) -> Raft:
        raft: Raft = await original(cls, *args, **kwargs)
        inject(raft._core.engine, faults)
        return raft

    Raft.new = classmethod(new)  # type: ignore[method-assign,assignment]


def main(argv: list[str] | None = None) -> int:
    """Install the faults from the environment, then run ``serve`` with ``argv``."""
    faults = faults_from_env()
    install(faults)
    from ...kv.server import serve_main

    print(f"TEST ONLY: engine faults switched on: {sorted(faults)}", file=sys.stderr, flush=True)
    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
