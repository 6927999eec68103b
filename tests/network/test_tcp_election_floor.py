"""The TCP transport's floor on the election timeout (``MIN_ELECTION_TIMEOUT_MS``): below it a
vote over TCP comes back after the candidates' elections have timed out, and no leader lasts
(on loopback, 2 to 3 ms went through hundreds of terms a second without a leader). ``Raft.new``
refuses such a ``Config`` with a ``TcpNetworkFactory`` (``check_config``) naming the floor; the
in-process ``Router`` still takes it (the simulator runs a few ms in virtual time)."""

from __future__ import annotations

import pytest

from openraft_py import ConfigError
from openraft_py.network.router import Router
from openraft_py.network.tcp import MIN_ELECTION_TIMEOUT_MS, TcpNetworkFactory
from openraft_py.raft import Raft
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine

from .tcp_cluster import tcp_config

pytestmark = pytest.mark.timeout(60)


def _timeouts(least: int) -> dict[str, int]:
    return {"election_timeout_min": least, "election_timeout_max": 2 * least, "heartbeat_interval": 1,
            "lease_drift_margin": 1}


async def test_raft_new_over_tcp_refuses_an_election_timeout_below_the_floor() -> None:
    disk = MemDisk()
    tiny = tcp_config(**_timeouts(2))
    with pytest.raises(ConfigError, match=rf"TcpNetworkFactory: Config.election_timeout_min=2 ms is below "
                                          rf"{MIN_ELECTION_TIMEOUT_MS} ms, the least the TCP transport takes"):
        await Raft.new(1, tiny, TcpNetworkFactory(1, "c"), MemLogStore(disk), MemStateMachine(disk))
    with pytest.raises(ConfigError, match="below"):
        TcpNetworkFactory(1, "c").check_config(tcp_config(**_timeouts(MIN_ELECTION_TIMEOUT_MS - 1)))
    at_floor = await Raft.new(1, tcp_config(**_timeouts(MIN_ELECTION_TIMEOUT_MS)), TcpNetworkFactory(1, "c"),
                              MemLogStore(disk), MemStateMachine(disk))
    await at_floor.shutdown()
    on_router = await Raft.new(1, tiny, Router().factory(1), MemLogStore(MemDisk()), MemStateMachine(MemDisk()))
    await on_router.shutdown()
