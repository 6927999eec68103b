"""``Config``: the runtime settings of a Raft node, with Openraft's names, units and defaults.

All durations are in milliseconds. ``Config.validate()`` checks every field and raises
``ConfigError`` naming the bad one; ``Raft.new`` calls it.
"""

from __future__ import annotations

import math

import msgspec

from .errors import ConfigError
from .types import _struct_repr
from .validation import shown

__all__ = ["Config", "RunningConfig", "SnapshotPolicy", "MAX_CONFIG_INT"]

MAX_CONFIG_INT: int = 2**62 - 1
"""The largest value of an integer field of ``Config``: far beyond any useful setting, and
within what the node's int64 arithmetic (the compiled kernels, ``read(n)`` of a snapshot
chunk) holds with room to spare. A larger one passed ``validate`` and failed later: a
``snapshot_max_chunk_size`` of ``2**64`` stopped the leader with ``Panicked``
(``OverflowError``) at its first snapshot transfer."""


class SnapshotPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When to build a snapshot. Use ``SnapshotPolicy.logs_since_last(n)`` or ``.never()``.

    As JSON (``openraft-py serve --raft-config``): ``{"snapshot_policy": {"logs_since_last_n":
    10000}}``, or ``null`` for never. Another field is refused (``msgspec.ValidationError``
    naming it): it was dropped, leaving the default policy in place."""

    logs_since_last_n: int | None = 5000
    """Build one when this many entries were applied since the last one; ``None`` = never."""

    @classmethod
    def logs_since_last(cls, n: int) -> SnapshotPolicy:
        """Snapshot every ``n`` applied entries (Openraft's default: 5000)."""
        return cls(n)

    @classmethod
    def never(cls) -> SnapshotPolicy:
        """Never build snapshots automatically (``trigger.snapshot()`` still works)."""
        return cls(None)

    def should_snapshot(self, applied_index: int, snapshot_index: int) -> bool:
        """Whether a snapshot is due given the applied and last snapshot index (-1 = none)."""
        n = self.logs_since_last_n
        return n is not None and applied_index - snapshot_index >= n

    __repr__ = _struct_repr


class Config(msgspec.Struct, kw_only=True):
    """Settings of a Raft node. Field names and defaults follow Openraft.

    Invariants checked by ``validate()``: ``cluster_name`` is a non-empty ``str``;
    ``0 < heartbeat_interval < election_timeout_min < election_timeout_max``;
    ``lease_drift_margin < election_timeout_min``; every size and count is positive
    (``max_in_snapshot_log_to_keep``, ``lease_drift_margin`` and ``send_snapshot_timeout``
    may be 0), and every integer at most ``MAX_CONFIG_INT``; ``max_entry_bytes <=
    max_payload_bytes``; ``snapshot_pacing`` is a finite number ``>= 0``; the
    ``snapshot_policy``'s ``n`` is in ``[1, MAX_CONFIG_INT]``; the ``enable_*`` switches are
    ``bool``s.
    """

    cluster_name: str = "foo"
    """The cluster's name (Openraft's field; a non-empty ``str``). The TCP transport does not
    read it: the name it checks at connect, so that two clusters never mix, is the
    ``cluster_name`` given to ``TcpNetworkFactory`` and ``TcpServer.start`` (which refuses a
    name other than the node's factory's). Give all three the same name. The node records the cluster name in its stores' owner record
    (``check_owner``: ``StoreOwnerMismatch``): the network factory's ``cluster_name`` when it
    has one, else this one (``raft.owner_cluster_name``)."""
    election_timeout_min: int = 150
    """Lower bound (ms) of the randomized election timeout. With the TCP transport at least
    ``network.tcp.MIN_ELECTION_TIMEOUT_MS`` (10 ms; ``Raft.new`` raises ``ConfigError``
    below it): a vote over TCP takes longer than a shorter timeout, and no leader lasts."""
    election_timeout_max: int = 300
    """Upper bound (ms, exclusive) of the randomized election timeout. The range above
    ``election_timeout_min`` spreads the nodes' timeouts so that one candidate usually asks
    first; the node checks its timers every ``min(heartbeat_interval / 2, 10)`` ms, so in a
    range much narrower than that the nodes time out together and split their votes: with
    150 and 151, five nodes took 1 to 5 s (up to 35 terms) to replace a crashed leader,
    against 0.2 s with 150 and 300. Keep the range at tens of milliseconds at least."""
    heartbeat_interval: int = 50
    """How often (ms) the leader sends heartbeats."""
    install_snapshot_timeout: int = 200
    """Timeout (ms) of one install-snapshot chunk RPC, to which the time the chunk's bytes
    take at ``replication_min_rate`` is added (a chunk of the default 3 MiB: 3.2 s at the
    default 1 MiB/s). A chunk that gets no answer within that is sent again. The chunk
    deadline was this alone: a chunk of ``snapshot_max_chunk_size`` bytes had to cross the
    link within 200 ms (3 MiB in 200 ms is about 126 Mbit/s), so on a slower link every chunk
    timed out and the transfer never completed, and a learner or follower that needed the
    snapshot never caught up. On a link slower than ``replication_min_rate`` that can still
    happen: lower that rate to fit the slowest link between two nodes."""
    send_snapshot_timeout: int = 0
    """Deprecated in Openraft; kept for compatibility, ignored."""
    max_payload_entries: int = 300
    """At most this many entries in one AppendEntries request. On the TCP transport at most
    ``wire.MAX_ENTRIES`` (65536), the most a receiver decodes (``TcpNetworkFactory.check_config``)."""
    max_payload_bytes: int = 8 * 1024 * 1024
    """At most this many payload bytes in one AppendEntries request (an addition to
    Openraft's fields, the byte twin of ``max_payload_entries``): a replication stream sends
    a planned batch whose entries add up to more as several consecutive requests, each
    within the budget. An entry larger than the budget on its own (written under an older,
    larger setting) goes alone in a request. Payload bytes are ``len(data)`` of a normal
    entry and the msgpack size of a membership entry; a blank entry counts 0. A transport
    must carry a request of this many payload bytes plus ``max_payload_entries`` entries'
    framing: the TCP transport checks that at ``Raft.new`` and ``TcpServer.start``
    (``openraft_py.network.tcp.required_frame_size``)."""
    max_entry_bytes: int = 4 * 1024 * 1024
    """The largest payload (bytes) ``client_write`` and ``client_write_many`` accept; a
    longer one raises ``EntryTooLarge`` before anything is logged (an addition to Openraft's
    fields). At most ``max_payload_bytes``, so every entry this node writes fits one request.
    Membership entries are made by the node itself and are not checked (their size is bounded
    by the node count, and every address by ``validation.MAX_ADDR_LEN``)."""
    max_inflight_requests: int = 8
    """AppendEntries requests a replication stream keeps in flight (pipelining)."""
    replication_min_rate: int = 1024 * 1024
    """The slowest link, in payload bytes per second, that replication to a target is sure to
    work over (an addition to Openraft's fields; default 1 MiB/s, about 8 Mbit/s). It sets
    each AppendEntries' deadline (the ``RPCOption.hard_ttl`` the network is given): the base
    deadline ``max(4 * heartbeat_interval, election_timeout_min)`` plus the time the payload
    bytes of the request and of the requests ahead of it to the same target (handed to the
    network, not answered yet; one that timed out counts until the target answers a later
    request, the connection is lost, or as long again as its bytes take at this rate has
    passed: its bytes may still be on the way) take at this rate. A request without entries, or with a few
    small ones behind nothing large, keeps the base deadline (200 ms by default), so a target
    that went silent is found as soon as before; a request behind a full window of large
    entries waits for them (up to ``max_inflight_requests * max_payload_bytes``, 64 MiB: 64 s
    at the default rate), and a connection that broke fails it at once, whatever its deadline.
    A snapshot chunk's deadline (``install_snapshot_timeout``) grows with its bytes, and
    those of a timed-out copy still counted, at this rate too.
    With the base deadline alone, a link that carried less than the window's bytes within it
    never caught up: every request timed out behind the bytes of the ones before it and was
    sent again, and a write that needed the target never committed. On a link slower than
    this rate that can still happen: set it at or below the slowest link between two nodes
    (payload bytes, without the transport's framing). Heartbeats keep the base deadline and,
    on the TCP transport, a connection of their own: a slow link costs no leadership.
    Below 16 KiB/s, lower the TCP servers' ``TcpServer.start(min_frame_rate=...)`` (16 KiB/s
    by default) to this rate too: a server closes a connection whose frame in progress
    arrives more slowly than that once its ``frame_timeout`` (30 s) is over (on a link of
    8 KiB/s, any frame over about 480 KiB), whatever deadline the leader gave it."""
    replication_lag_threshold: int = 5000
    """A learner within this many entries of the leader counts as caught up."""
    snapshot_policy: SnapshotPolicy = msgspec.field(default_factory=SnapshotPolicy)
    """When to build snapshots."""
    snapshot_pacing: float = 3.0
    """How long a node waits after a snapshot build before the policy may start the next one,
    as a multiple of that build's duration (an addition to Openraft's fields). A build reads
    the whole state machine, so its cost grows with the state while the policy's interval
    (``logs_since_last(n)`` entries) does not: under a steady write load, an unpaced policy
    would have every node building one snapshot after another. With the default 3.0 a node
    spends at most a quarter of its time building, and the log between two snapshots grows
    with the state instead. ``0`` starts a build as soon as one is due; ``trigger.snapshot()``
    is never paced."""
    snapshot_max_chunk_size: int = 3 * 1024 * 1024
    """Bytes per install-snapshot chunk."""
    max_in_snapshot_log_to_keep: int = 1000
    """Entries kept in the log after a snapshot covers them."""
    purge_batch_size: int = 1
    """Purge only when at least this many entries can go."""
    enable_tick: bool = True
    """Run the timer at all (election timeouts, heartbeats)."""
    enable_heartbeat: bool = True
    """Let the leader send periodic heartbeats. Off (as tests do), followers hear from the
    leader only when it replicates entries, so with ``enable_elect`` on an idle cluster
    elects a new leader about every election timeout (terms climb); turn both off together
    to drive a cluster by hand."""
    enable_elect: bool = True
    """Let a follower start an election on timeout."""
    enable_pre_vote: bool = True
    """Run a pre-vote round before raising the term (thesis 9.6): a node that was cut off
    and comes back cannot disrupt a healthy leader or inflate terms. On by default (an
    addition to Openraft's fields): it is what keeps a voter that was removed while cut off,
    and so never learned it is out, from raising its term on every election timeout and
    deposing the leader when it is heard from again (``docs/design/joint-consensus.md``,
    "Removed voters"). It costs an election one more round trip. A voter being removed
    (not in the new config of a joint membership) asks first even when this is off."""
    lease_drift_margin: int = 20
    """Clock-drift margin (ms) subtracted from ``election_timeout_min`` for the leader lease."""
    max_apply_batch: int = 4096
    """At most this many entries handed to the state machine in one ``apply`` call."""

    def validate(self) -> Config:
        """Check every field; return ``self`` or raise ``ConfigError`` naming the bad field."""

        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"invalid Config.{field}={shown(getattr(self, field))}: {why}")

        if not isinstance(self.cluster_name, str) or not self.cluster_name:
            raise bad("cluster_name", "must be a non-empty string")
        for name in (
            "election_timeout_min",
            "election_timeout_max",
            "heartbeat_interval",
            "install_snapshot_timeout",
            "max_payload_entries",
            "max_payload_bytes",
            "max_entry_bytes",
            "max_inflight_requests",
            "replication_min_rate",
            "replication_lag_threshold",
            "snapshot_max_chunk_size",
            "purge_batch_size",
            "max_apply_batch",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "must be a positive integer")
            if v > MAX_CONFIG_INT:
                raise bad(name, f"must be at most {MAX_CONFIG_INT} (2**62 - 1)")
        for name in ("max_in_snapshot_log_to_keep", "lease_drift_margin", "send_snapshot_timeout"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(name, "must be a non-negative integer")
            if v > MAX_CONFIG_INT:
                raise bad(name, f"must be at most {MAX_CONFIG_INT} (2**62 - 1)")
        for name in ("enable_tick", "enable_heartbeat", "enable_elect", "enable_pre_vote"):
            # Not just truthy: "false" would switch it on.
            if type(getattr(self, name)) is not bool:
                raise bad(name, "must be True or False")
        if self.election_timeout_min >= self.election_timeout_max:
            raise bad("election_timeout_min", f"must be less than election_timeout_max={self.election_timeout_max}")
        if self.heartbeat_interval >= self.election_timeout_min:
            raise bad("heartbeat_interval", f"must be less than election_timeout_min={self.election_timeout_min}")
        if self.lease_drift_margin >= self.election_timeout_min:
            raise bad("lease_drift_margin", f"must be less than election_timeout_min={self.election_timeout_min}")
        if self.max_entry_bytes > self.max_payload_bytes:
            raise bad("max_entry_bytes", f"must be at most max_payload_bytes={self.max_payload_bytes}")
        p = self.snapshot_pacing
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p) or p < 0:
            raise bad("snapshot_pacing", "must be a finite number >= 0")
        if not isinstance(self.snapshot_policy, SnapshotPolicy):
            raise bad("snapshot_policy", "must be a SnapshotPolicy")
        n = self.snapshot_policy.logs_since_last_n
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_CONFIG_INT):
            raise bad("snapshot_policy", f"logs_since_last(n) needs an int n in [1, {MAX_CONFIG_INT}]")
        return self

    def lease_ms(self) -> int:
        """How long (ms) after a quorum ack the leader may serve lease reads."""
        return self.election_timeout_min - self.lease_drift_margin

    __repr__ = _struct_repr


class RunningConfig(Config, frozen=True):  # type: ignore[misc]  # (msgspec allows a frozen subclass)
    """The settings a running node uses: ``raft.config``, a read-only copy of the ``Config``
    the node was started with, checked then. It is a ``Config`` in every other way.

    Assigning a field raises ``AttributeError``: the node reads its settings as it runs
    (a write's size limit, timers, batch sizes), so a change would take effect at once,
    in part and unchecked. To run other settings, start the node again with a ``Config``
    changed from this one: ``Config(**msgspec.structs.asdict(raft.config))``, then set
    fields, or ``msgspec.structs.replace(raft.config, heartbeat_interval=...)`` (another
    ``RunningConfig``, which ``Raft.new`` takes as any ``Config``).
    """

    def __eq__(self, other: object) -> bool:
        """Equal to any ``Config`` (this one's kind or the plain one) with the same fields:
        ``raft.config == Config(...)`` compares the settings, as before a running node's
        config was read-only (two msgspec types are otherwise never equal). Unhashable, as a
        ``Config`` is."""
        if isinstance(other, Config):
            return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        """The opposite of ``__eq__``."""
        if isinstance(other, Config):
            return msgspec.structs.astuple(self) != msgspec.structs.astuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # (as Config's: equal to a Config, which has none)

    @classmethod
    def of(cls, config: Config) -> RunningConfig:
        """A read-only copy of ``config`` (not checked here: ``validate()``)."""
        return cls(**msgspec.structs.asdict(config))
