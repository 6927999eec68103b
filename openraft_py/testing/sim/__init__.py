"""A deterministic simulator: the real ``Engine`` and ``RaftCore`` under faults, in virtual time.

One run (``Simulation(seed).run()``) builds a cluster of 3 or 5 voters (3 to 7 with
``nodes=N``, ``--nodes N``; and, in some runs, spare nodes up to id 7) on the in-process router, with simulated disks, inside an event
loop whose clock is virtual: when nothing is
runnable, time jumps to the next timer. Every random choice (the cluster's configuration,
fault schedule, client workload, message drops and delays, disk latencies, election
timeouts) comes from the seed, and the loop runs callbacks in a fixed order, so the same seed
gives the same run, byte for byte (the trace and the history are compared in the tests).

During the run, clients write and read a few keys while a fault schedule partitions the
network (symmetric, one-way, bridge), drops, duplicates and delays messages, crashes nodes
(losing what their disk had not flushed) and restarts them, slows disks and pauses nodes.
Admin steps change the membership (add learners, change the voters, remove the leader),
trigger snapshots and log purges and transfer leadership; small snapshot policies and
chunk sizes make followers catch up by chunked snapshots.
After every fault step and every few milliseconds of virtual time the checker verifies:

- election safety: at most one leader per term;
- log matching: two logs holding the same log id at an index agree on every entry before it;
- leader completeness: a leader holds every entry committed in an earlier or equal term;
- state machine safety: every node applied the same entry at each index;
- committed entries never change; commit, applied and vote never go back on a node (the vote
  not even across a restart); no node fails with anything but a deliberate stop; no node
  refuses another's request as ``InvalidRequest`` (duplicates included: a correct node never
  sends one, so a refusal is a bug or a legitimate request refused);
- log compaction: purged <= snapshot <= applied <= committed on every node.

One seed in ``WIRE_EVERY`` (``seed % WIRE_EVERY == 0``; ``--wire all|none`` overrides it)
passes every message through the TCP wire codec (``Router.set_wire``): the nodes receive
requests and responses exactly as the TCP transport decodes them, and a message the codec
refuses is a violation. Those seeds also replicate as over TCP: the leaders hand their
AppendEntries over with ``submit_append_entries`` and get the answers through its callback.

The checks compare only the entries a node still holds (purged ones are covered by its
snapshot, and the record of applied entries travels in snapshots).

At the end all faults heal, crashed nodes restart and only the members of the latest
committed membership keep running: its voters must elect a leader that serves a write, and
every member must converge (liveness). Then the client history is checked for linearizability
(``openraft_py.testing.lincheck``).

``skew=S`` (``--skew S``) runs each node's clock at its own rate in ``[1 - S, 1 + S]`` of
real time (``SimClock``; off by default, and then a run is what it was without the option).
``lease`` (``--lease FACTOR``) is a targeted scenario of its own: a leader with a slow clock
cut off while a majority with fast clocks elects a leader and writes, with the skew at
``FACTOR`` times what ``Config.lease_drift_margin`` covers; its stale lease reads (beyond
the bound) fail the linearizability check.

Layout: ``simulation`` (the run), ``env`` (virtual-time loop, clock, simulated disks),
``faults`` (the fault and admin schedule), ``checks`` (the step-by-step checker, built on
``openraft_py.testing.invariants``), ``lease`` (the lease-read scenario), ``cli`` (the
command line).

Command line (``make sim SEEDS=N``)::

    python -m openraft_py.testing.sim --seeds 1000           # seeds 0..999, progress, summary
    python -m openraft_py.testing.sim --seed 17 --trace      # replay one seed, print its trace
    python -m openraft_py.testing.sim --seeds 200 --fault grant_without_log_check
    python -m openraft_py.testing.sim --seeds 200 --skew 0.05        # clocks skewed by up to 5 %
    python -m openraft_py.testing.sim --seeds 100 --nodes 7          # seven voters in every run
    python -m openraft_py.testing.sim --seeds 200 --lease 1          # lease scenario at the bound
"""

from __future__ import annotations

from .checks import Checker, Violation
from .cli import main
from .env import SimClock, SimDisk, SimLogStore, SimStuck, SimWorld, VirtualTimeLoop
from .lease import LEASE_ROUNDS, MAX_LEASE_FACTOR, LeaseResult, LeaseSkewRun, lease_skew_bound, run_lease_seed
from .simulation import ENGINE_FAULTS, MAX_NODES, WIRE_EVERY, SimResult, Simulation, clock_rates, run_seed

__all__ = [
    "ENGINE_FAULTS",
    "LEASE_ROUNDS",
    "MAX_LEASE_FACTOR",
    "MAX_NODES",
    "WIRE_EVERY",
    "Checker",
    "LeaseResult",
    "LeaseSkewRun",
    "SimClock",
    "SimDisk",
    "SimLogStore",
    "SimResult",
    "SimStuck",
    "SimWorld",
    "Simulation",
    "Violation",
    "VirtualTimeLoop",
    "clock_rates",
    "lease_skew_bound",
    "main",
    "run_lease_seed",
    "run_seed",
]
