"""TEST ONLY: engine bug switches, the one typed injection point.

The simulator (``openraft_py.testing``) and the Jepsen-style runner prove they catch real bugs
by switching one of these on in a node's engine and checking that a safety or linearizability
check fails. Each ``EngineFault`` breaks exactly one Raft rule; production code never switches
one on (``RaftCore``, ``Raft`` and ``serve`` never call ``inject``).

::

    from openraft_py.engine.faults import EngineFault, inject

    inject(raft._core.engine, {EngineFault.APPLY_BEFORE_COMMIT})   # or {"apply_before_commit"}
    inject(raft._core.engine, ())                                   # all off again

Inside the engine a switch is read as ``EngineFault.X in eng.injected_faults``, always behind
the emptiness test ``eng.injected_faults and ...``: with no fault injected that costs one
truth test of an empty ``frozenset`` on the paths that check one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EngineFault", "NO_FAULTS", "inject", "parse_faults"]


class EngineFault(enum.Enum):
    """A bug the engine can be told to have. The value is the switch's stable name (the
    simulator's ``--fault`` and the Jepsen runner's ``OPENRAFT_PY_TEST_FAULTS``)."""

    GRANT_WITHOUT_LOG_CHECK = "grant_without_log_check"
    """Grant votes without the §5.4.1 up-to-date log check (a leader may lack committed
    entries)."""

    COMMIT_PREVIOUS_TERM = "commit_previous_term"
    """Commit an entry of a previous term by counting replicas (thesis 3.6.2, Figure 3.7)."""

    REPLY_BEFORE_VOTE_PERSISTED = "reply_before_vote_persisted"
    """Send a vote grant before the vote is durable (a restart may vote twice in a term)."""

    APPLY_BEFORE_COMMIT = "apply_before_commit"
    """A follower applies whatever a leader sent, committed or not."""

    EXPIRED_LEASE_READ = "expired_lease_read"
    """Answer lease reads without a valid lease (stale reads)."""


NO_FAULTS: frozenset[EngineFault] = frozenset()
"""No switch on: what every production engine holds."""


def parse_faults(faults: Iterable[EngineFault | str]) -> frozenset[EngineFault]:
    """``faults`` as ``EngineFault`` members; a name is looked up by value. Raises
    ``ValueError`` naming every known switch for an unknown name."""
    out: set[EngineFault] = set()
    for f in faults:
        if isinstance(f, EngineFault):
            out.add(f)
            continue
        try:
            out.add(EngineFault(f))
        except ValueError:
            known = ", ".join(x.value for x in EngineFault)
            raise ValueError(f"unknown engine fault {f!r}; known: {known}") from None
    return frozenset(out)


def inject(engine: Engine, faults: Iterable[EngineFault | str]) -> None:
    """TEST ONLY: switch exactly ``faults`` on in ``engine`` (replacing what was on; an empty
    iterable switches every fault off). Members or their names; ``ValueError`` for an unknown
    name, with nothing changed."""
    engine.injected_faults = parse_faults(faults)
