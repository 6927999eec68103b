"""The replicated key-value service: the example application of openraft-py (DESIGN §8).

One ``openraft-py serve`` process runs one node: a ``Raft`` over the RocksDB log store and
state machine, the TCP transport for Raft RPCs, and an HTTP/JSON API (aiohttp) for clients
and operators::

      HTTP client ──> http_api (aiohttp) ──> KvNode ──> Raft ──> RocksLogStore
                          │ 307 to the leader        │           KvStateMachine (RocksDB)
      Prometheus ──> /metrics (metrics.py)           └── TcpServer / KvNetworkFactory ── peers

Modules, one job each:

- ``commands``: the key-value commands (``put`` / ``delete`` / ``cas``) as entry data, and
  ``KvStateMachine`` (``RocksStateMachine`` plus the conditional delete ``cas`` needs);
- ``rocks_state_machine``: ``RocksStateMachine``, the durable state machine on RocksDB (the
  same ``apply_kv`` as ``MemStateMachine``; no aiohttp); ``rocks_snapshot``: its snapshot file
  format;
- ``nodes``: how a membership node carries both addresses (raft and HTTP), and the network
  factory that resolves the raft address and counts RPC errors per peer;
- ``node``: ``KvNode``, one running node (stores, Raft, transport) and its operations;
- ``http_api``: the aiohttp application (every path of DESIGN §8, the redirect rule, the
  error mapping);
- ``metrics``: the Prometheus registry of one node; ``logs``: structured logging;
- ``server``: the ``serve`` verb (flags, signals, graceful stop);
- ``cli``: the ``openraft-py`` command line (``python -m openraft_py.kv``); ``client``: an
  HTTP client that finds the leader and follows redirects; ``local_cluster``: ``serve``
  processes on loopback (``cluster up``); ``demo``: ``openraft-py demo`` (``make run``).

Design notes: ``docs/design/kv-service.md``. Importing this package imports neither aiohttp
nor prometheus_client (the ``kv`` extra).
"""

__all__: list[str] = []
