"""The TCP transport: ``TcpNetworkFactory`` (client side) and ``TcpServer`` (server side).

The wire format is ``openraft_py.network.wire`` (documented in ``docs/design/wire.md``)::

    factory = TcpNetworkFactory(node_id=1, cluster_name="prod", ssl=client_ctx)
    raft = await Raft.new(1, config, factory, log_store, state_machine)
    server = await TcpServer.start(raft, "127.0.0.1", 21001, cluster_name="prod", ssl=server_ctx)
    ...
    await raft.shutdown()
    await server.close()
    await factory.close()

Client side: one connection per target node (shared by every client ``new_client`` returns
for it), many requests in flight matched by request id, connect on first use, reconnect
with jittered exponential back-off after a failure. Errors (``openraft_py.errors``):

- ``Unreachable``: the connection could not be made (refused, unreachable, TLS failure,
  handshake refused), the target is backing off after such a failure, the connection broke
  with the request in flight, the target's node has stopped, or the target is not taking
  what is written to it (over two ``max_frame_size`` unsent: paused, frozen; nothing is
  written then);
- ``Timeout``: the request was sent and no answer came within ``RPCOption.hard_ttl``;
- ``RemoteError``: the target received the request and answered an error;
- ``NetworkError``: the request cannot be framed (larger than ``max_frame_size``; the
  message names the setting to change).

Limits agree with the node's ``Config``: ``max_frame_size`` (32 MiB by default, the same on
every node) must hold ``required_frame_size(config)``, an AppendEntries of
``Config.max_payload_bytes`` payload bytes in ``max_payload_entries`` entries or a snapshot
chunk, with their framing. ``Raft.new`` (through ``TcpNetworkFactory.check_config``) and
``TcpServer.start`` raise ``ConfigError`` otherwise.

Server side: every accepted connection must open with the handshake (protocol version,
cluster name, sender id; the sender must be in the node's membership once it has one);
then its requests are handed to the ``Raft`` handlers concurrently and answered in
whatever order they finish. Malformed input, an oversized frame, a protocol violation, a
frame arriving too slowly (``frame_timeout``, ``min_frame_rate``) or an idle connection
closes that connection only, logged once with the peer address; every other connection
keeps being served. Every ``membership_check_interval`` (0.1 s) the server
closes the connections whose sender has left the membership since its handshake.

Identity (opt-in, for mutual TLS): with ``peer_id_of_cert`` (e.g.
``node_id_from_cert(cluster_name)``, which reads a ``node_uri`` subjectAltName such as
``openraft://prod/3``) the server refuses a handshake whose sender id is not the one its
client certificate names, and the client refuses a server whose certificate does not name
the node it dials. Without it any certificate of the cluster's CA may claim any node id.

Both sides run on whatever event loop is running (asyncio or uvloop), set TCP_NODELAY, and
coalesce the frames written in one loop turn into one write.
"""

from __future__ import annotations

from ._tcp_client import MAX_BACKOFF, MIN_ELECTION_TIMEOUT_MS, TcpClient, TcpNetworkFactory, required_frame_size
from ._tcp_common import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_RATE,
    MAX_FRAME_SIZE,
    MAX_SECONDS,
    PeerCert,
    PeerIdOfCert,
    check_given_addr,
    node_id_from_cert,
    node_uri,
    parse_addr,
)
from ._tcp_server import (
    DEFAULT_MAX_CONNECTIONS,
    MAX_CONNECTIONS,
    MAX_INFLIGHT,
    ServedRaft,
    TcpServer,
    tcp_connection_limit,
)

__all__ = [
    "TcpNetworkFactory",
    "TcpClient",
    "TcpServer",
    "ServedRaft",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_FRAME_SIZE",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_CONNECTIONS",
    "MAX_INFLIGHT",
    "MAX_BACKOFF",
    "MAX_SECONDS",
    "MAX_FRAME_RATE",
    "tcp_connection_limit",
    "PeerCert",
    "PeerIdOfCert",
    "node_id_from_cert",
    "node_uri",
    "parse_addr",
    "check_given_addr",
    "required_frame_size",
    "MIN_ELECTION_TIMEOUT_MS",
]
