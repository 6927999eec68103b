"""The error hierarchy.

``RaftError`` is the base of everything this library raises on purpose.

- ``Fatal``: the node stopped and will not serve again (``StorageError`` and its
  ``StoreOwnerMismatch``, ``Stopped``, ``Panicked``). Every later call on the same ``Raft``
  raises the same ``Fatal``.
- ``ApiError``: a recoverable refusal of one call (``ForwardToLeader``,
  ``ChangeMembershipError``, ``InitializeError``, ``LinearizableReadError``, ``WaitTimeout``,
  ``InvalidRequest``, ``EntryTooLarge``).
- ``ConfigError``: an invalid ``Config``, raised by ``Config.validate()`` and ``Raft.new``.
- ``RPCError``: raised by a ``RaftNetwork`` implementation (``Unreachable``, ``Timeout``,
  ``NetworkError``, ``RemoteError``); the replication tasks back off on them.
- ``LogCompacted`` / ``LogUnavailable``: raised by a log reader asked for entries it no longer
  (or does not yet) hold.

Vote and append rejections are values in the responses, never exceptions.

Every error pickles and copies (``pickle``, ``copy.copy``, ``copy.deepcopy``) with its
message and fields intact (``RaftError.__reduce__``), so it can cross a process pool, a
task queue or a logging handler that ships records.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from .types import BasicNode, LogId, NodeId, Vote, _safe_repr

__all__ = [
    "RaftError",
    "restore_error",
    "Fatal",
    "StorageError",
    "StoreOwnerMismatch",
    "Stopped",
    "Panicked",
    "ApiError",
    "ForwardToLeader",
    "ChangeMembershipError",
    "InProgress",
    "EmptyMembership",
    "LearnerNotFound",
    "NotALearner",
    "MembershipTooLarge",
    "LearnerIsLagging",
    "InitializeError",
    "NotAllowed",
    "NotInMembers",
    "LinearizableReadError",
    "QuorumNotEnough",
    "WaitTimeout",
    "InvalidRequest",
    "EntryTooLarge",
    "ConfigError",
    "LogCompacted",
    "LogUnavailable",
    "RPCError",
    "Unreachable",
    "Timeout",
    "NetworkError",
    "RemoteError",
]


class RaftError(Exception):
    """Base of every error openraft-py raises.

    Pickled and copied as its message (``args``) and its fields (the instance ``__dict__``,
    e.g. ``ForwardToLeader.leader_node``): the copy is made without calling ``__init__``
    again, which takes the fields, not the message (``EntryTooLarge(size, limit)``), so
    Python's default (calling the class with ``args``) failed or, for a class whose
    arguments all have defaults, built another message. A field holding an object that
    cannot be pickled (a ``StorageError.cause`` of the store's own type) fails the pickling
    as it would anywhere. As with any exception, ``__cause__``, ``__context__`` and the
    traceback are not kept (``StorageError.cause`` is a field, so it is).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (restore_error, (type(self), self.args, self.__dict__))


def restore_error(cls: type[BaseException], args: tuple[Any, ...], fields: dict[str, Any]) -> BaseException:
    """An exception of class ``cls`` with message ``args`` and attributes ``fields``, made
    without calling ``cls.__init__`` (which takes fields, not a message): what an error's
    ``__reduce__`` returns for ``pickle`` and ``copy`` (``RaftError``; also the key-value
    client's ``ClientError`` and the testing kit's errors with fields)."""
    err = cls.__new__(cls, *args)
    err.__dict__.update(fields)
    return err


# -- fatal -------------------------------------------------------------------------------------


class Fatal(RaftError):
    """The node has stopped; nothing more can be done with this ``Raft`` instance."""


class StorageError(Fatal):
    """A storage call failed; the node stopped to avoid losing or corrupting data.

    ``subject`` says what was being read or written (e.g. ``"append 3-17"``) and
    ``__cause__`` holds the original exception.
    """

    def __init__(self, subject: str, cause: BaseException | None = None) -> None:
        msg = f"storage error while {subject}"
        if cause is not None:
            msg += f": {type(cause).__name__}: {cause}"
        super().__init__(msg)
        self.subject = subject
        self.cause = cause


class StoreOwnerMismatch(StorageError):
    """A store records another owner (node id and cluster name) than the node started on it.

    Raised by ``Raft.new``, before anything is read from or written to the store, when the log
    store (or the state machine) offers the optional ``check_owner`` (``RocksLogStore``,
    ``MemLogStore``, ``RocksStateMachine``) and its owner record names another node id or
    cluster name: node 2's store opened for node 3 (two directories swapped, a copied machine
    image), or a store of another cluster (the cluster name is the network factory's
    ``cluster_name`` when it has one, ``TcpNetworkFactory``'s, else ``Config.cluster_name``).
    Such a node would count node 2's vote and log as its own (it could vote twice in a term,
    or count as a copy of entries it never held). ``node_id`` and ``cluster_name`` are what
    the store records; ``expected_node_id`` and ``expected_cluster_name`` what the node was
    started as; ``what`` which store refused (``"log store"`` or ``"state machine"``:
    ``RocksStateMachine`` has the optional ``check_owner`` of ``RaftStateMachine`` too).
    """

    def __init__(
        self,
        subject: str,
        node_id: NodeId,
        cluster_name: str,
        expected_node_id: NodeId,
        expected_cluster_name: str,
        *,
        what: str = "log store",
    ) -> None:
        holds = "the log and vote" if what == "log store" else f"the {what}"
        if node_id != expected_node_id:
            why = (f"it holds {holds} of node {_safe_repr(node_id)} of cluster {cluster_name!r}, not of node "
                   f"{_safe_repr(expected_node_id)}: start node {_safe_repr(node_id)} on it, or give node {_safe_repr(expected_node_id)} a store of "
                   "its own (a node must never take over another node's log and vote)")
        else:
            why = (f"it holds {holds} of node {_safe_repr(node_id)} of cluster {cluster_name!r}, not of cluster "
                   f"{expected_cluster_name!r} (the network factory's cluster_name, else Config.cluster_name): "
                   f"start the node in cluster {cluster_name!r}, or give it a store of its own")
        super().__init__(subject, ValueError(why))
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.expected_node_id = expected_node_id
        self.expected_cluster_name = expected_cluster_name
        self.what = what


class Stopped(Fatal):
    """The node was shut down."""

    def __init__(self, msg: str = "raft node has been shut down") -> None:
        super().__init__(msg)


class Panicked(Fatal):
    """An internal invariant was broken; the node stopped. This is a bug: please report it."""


# -- recoverable API errors --------------------------------------------------------------------


class ApiError(RaftError):
    """A recoverable refusal of one API call."""


class ForwardToLeader(ApiError):
    """This node is not the leader. ``leader_id``/``leader_node`` name the leader it knows
    of, or are ``None`` when it knows none (retry later).

    The call's outcome is one of three:

    - ``committed_log_id`` is not ``None``: the call's change took effect. Its entry
      committed at that log id, and only a wait that follows the commit was cut short by
      this node no longer leading: a blocking ``add_learner``'s wait for the learner to
      catch up, or a ``change_membership``'s wait for its final config once its joint
      config (that entry) committed (the next leader appends the final config; not knowing
      the call's ``retain``, it keeps the removed voters as learners:
      ``remove_learners`` them if ``retain=False`` was meant). Do not undo it; asking the
      leader again is safe (the same learner or voters again change nothing, and a
      blocking ``add_learner`` waits for its catch-up there). ``outcome_unknown`` is then
      ``False``.
    - else ``outcome_unknown`` is ``False``: the call did not and will not take effect: it
      was refused before it was appended, or its entry was replaced by another leader's.
    - ``outcome_unknown`` is ``True``: the entry was appended and this node can no longer
      tell whether it commits (the node left the cluster, or a snapshot it installed covers
      the entry; a membership change whose leader stepped down before it committed): a retry
      may then apply the command twice, so make such commands idempotent or check before
      retrying.
    """

    def __init__(
        self,
        leader_id: NodeId | None = None,
        leader_node: BasicNode | None = None,
        *,
        outcome_unknown: bool = False,
        committed_log_id: LogId | None = None,
    ) -> None:
        if outcome_unknown and committed_log_id is not None:
            raise ValueError("ForwardToLeader: a change that committed (committed_log_id) has a known outcome")
        if leader_id is None:
            msg = "not the leader, and no leader is known"
        else:
            msg = f"not the leader; forward to node {_safe_repr(leader_id)}"
            if leader_node is not None and leader_node.addr:
                msg += f" at {leader_node.addr}"
        if outcome_unknown:
            msg += " (the write was appended; whether it commits is unknown)"
        if committed_log_id is not None:
            msg += (f" (the change committed at {committed_log_id!r} and took effect; "
                    "only the wait after it was cut short)")
        super().__init__(msg)
        self.leader_id = leader_id
        self.leader_node = leader_node
        self.outcome_unknown = outcome_unknown
        self.committed_log_id = committed_log_id


class ChangeMembershipError(ApiError):
    """A membership change was refused."""


class InProgress(ChangeMembershipError):
    """Another membership change has not committed yet (``membership_log_id`` is its entry).

    ``wait_ms`` is the engine's (``Engine.change_membership``, ``add_learner``,
    ``remove_learners``): greater than 0 when the change in progress is one a leader elected
    less than ``election_timeout_max`` ago inherited (the previous leader's, or the first
    membership of ``initialize``), which commits with that leader's first entry, and then how
    many ms the leader is still that new. The ``Raft`` calls wait for that commit and ask
    again, so their callers see only ``wait_ms == 0``."""

    def __init__(self, membership_log_id: LogId | None = None, msg: str | None = None, wait_ms: float = 0.0) -> None:
        # (It said "(the call that made it returned)", which read as if that call had
        # returned already: the caller could not tell when to retry.)
        super().__init__(msg or (
            f"another membership change (entry {membership_log_id!r}) has not committed yet; retry once it has "
            "(the add_learner, change_membership or remove_learners call that made it returns then; one this leader was "
            "elected with commits with its first entries)"
        ))
        self.membership_log_id = membership_log_id
        self.wait_ms = wait_ms


class EmptyMembership(ChangeMembershipError):
    """The requested membership has no voter."""

    def __init__(self) -> None:
        super().__init__("the new membership must have at least one voter")


class LearnerNotFound(ChangeMembershipError):
    """A new voter is not a learner yet: add it with ``add_learner`` first. Also raised by a
    blocking ``add_learner`` whose learner a later change removed while it waited for it to
    catch up (``msg`` says so)."""

    def __init__(self, node_id: NodeId, msg: str | None = None) -> None:
        super().__init__(msg or f"node {_safe_repr(node_id)} is not a learner; call add_learner({_safe_repr(node_id)}, ...) first")
        self.node_id = node_id


class NotALearner(ChangeMembershipError):
    """``remove_learners`` was given a voter (of a config of the effective membership): a
    voter leaves with ``change_membership`` (``retain=False`` removes it from the cluster;
    ``retain=True`` keeps it as a learner, which ``remove_learners`` can then remove)."""

    def __init__(self, node_id: NodeId, msg: str | None = None) -> None:
        super().__init__(msg or (
            f"node {_safe_repr(node_id)} is a voter, not a learner: remove it from the voters with change_membership "
            f"(retain=False removes it from the cluster)"))
        self.node_id = node_id


class MembershipTooLarge(ChangeMembershipError):
    """``add_learner`` of a new node to a membership that holds ``limit`` nodes
    (``openraft_py.MAX_MEMBERSHIP_NODES``, 4096, voters and learners): the membership would
    pass the bound every decoder of a membership refuses more by (a peer, a store reading it
    back). Nothing was logged. Remove learners that are gone (``remove_learners``) first."""

    def __init__(self, node_id: NodeId, limit: int) -> None:
        super().__init__(
            f"cannot add node {_safe_repr(node_id)}: the membership holds {_safe_repr(limit)} nodes, the most one may hold "
            f"(MAX_MEMBERSHIP_NODES, voters and learners); remove learners that are gone first")
        self.node_id = node_id
        self.limit = limit


class LearnerIsLagging(ChangeMembershipError):
    """Most of the requested voters have not caught up with the leader: ``node_ids`` are the
    requested voters whose replication is unknown or more than ``threshold`` entries
    (``Config.replication_lag_threshold``) behind the leader's log, or which answered no
    request of the leader's sent within the last ``Config.election_timeout_max`` (a node that
    is down or cut off). Appended, the joint config could not commit until they caught up,
    and the cluster would take no writes meanwhile (the leader, reaching no quorum of the new
    voters, steps down). Wait until they catch up (``add_learner(..., blocking=True)`` does),
    or pass ``allow_lagging=True``.

    ``unheard`` and ``wait_ms`` are the engine's (``Engine.change_membership``): on a leader
    elected less than ``election_timeout_max`` ago, the nodes of ``node_ids`` whose
    replication it does not know yet, when counting them caught up would give the majority,
    and how many ms this leader is still that new. ``Raft.change_membership`` waits for their
    first answers and asks again, so its callers see only ``unheard == []``."""

    def __init__(
        self, node_ids: list[NodeId], threshold: int, unheard: list[NodeId] | None = None, wait_ms: float = 0.0
    ) -> None:
        super().__init__(
            f"nodes {_safe_repr(node_ids)} have not caught up with the leader (replication unknown, over "
            f"{_safe_repr(threshold)} entries behind, or no answer lately: down or cut off?), so the new voters "
            "have no majority able to commit; retry once they have (add_learner with blocking=True "
            "waits for it), or pass allow_lagging=True"
        )
        self.node_ids = node_ids
        self.threshold = threshold
        self.unheard: list[NodeId] = [] if unheard is None else unheard
        self.wait_ms = wait_ms


class InitializeError(ApiError):
    """``Raft.initialize`` was refused."""


class NotAllowed(InitializeError):
    """The node already has a log or a vote: it was initialized before (or joined a cluster).

    ``last_log_id`` and ``vote`` are what it has."""

    def __init__(self, last_log_id: LogId | None, vote: Vote) -> None:
        super().__init__(
            f"initialize is only allowed on a pristine node; this one has last_log_id={last_log_id!r}, "
            f"vote={vote!r}"
        )
        self.last_log_id = last_log_id
        self.vote = vote


class NotInMembers(InitializeError):
    """The initial membership does not contain this node: ``node_id`` is the node,
    ``members`` the voters of the membership it was given."""

    def __init__(self, node_id: NodeId, members: Set[NodeId]) -> None:
        super().__init__(f"node {_safe_repr(node_id)} is not in the initial membership {_safe_repr(sorted(members))}")
        self.node_id = node_id
        self.members = members


class LinearizableReadError(ApiError):
    """A linearizable read could not be confirmed."""


class QuorumNotEnough(LinearizableReadError):
    """The leader could not reach a quorum (or its lease expired) to confirm leadership."""


class WaitTimeout(ApiError):
    """A ``Raft.wait(...)`` condition did not hold in time; the message names the condition
    and the last metrics seen."""


class InvalidRequest(ApiError):
    """A request from a peer (``Raft.append_entries``, ``vote``, ``install_snapshot``,
    ``handle_transfer_leader``) is malformed: a field of the wrong type, a term, index or node
    id out of range (see ``openraft_py.validation``), entries that are not contiguous from
    ``prev_log_id`` or whose terms go backward. It was refused before the node looked at it:
    nothing changed and the node keeps running. Also an ``append_entries`` one of whose
    entries contradicts an entry the node has committed (no correct leader sends one): refused
    after the vote check (a vote ``>=`` the node's is adopted, as any leader's), the log
    unchanged. A correct peer never sends one, so a
    transport should log it and may drop the connection.

    ``rpc`` names the request kind (``"append_entries"``, ``"vote"``, ``"install_snapshot"``,
    ``"transfer_leader"``); ``reason`` says what is wrong.
    """

    def __init__(self, rpc: str, reason: str) -> None:
        super().__init__(f"invalid {rpc} request: {reason}")
        self.rpc = rpc
        self.reason = reason


class EntryTooLarge(ApiError, ValueError):
    """A client write payload is longer than ``Config.max_entry_bytes``. Raised by
    ``Raft.client_write`` and ``client_write_many`` before anything is logged: nothing of the
    call took effect (for ``client_write_many``, none of its payloads) and the node keeps
    running. Also a ``ValueError``, like every other refused API argument
    (``openraft_py.validation``).

    ``size`` is the payload's length in bytes, ``limit`` the ``max_entry_bytes`` in force,
    ``position`` its index in ``client_write_many``'s payloads (``None`` for
    ``client_write``). Split the value, store it elsewhere, or raise the limit (see
    ``Config.max_entry_bytes`` for what else then has to grow).
    """

    def __init__(self, size: int, limit: int, position: int | None = None) -> None:
        which = "a client write payload" if position is None else f"payload {_safe_repr(position)}"
        super().__init__(f"{which} of {_safe_repr(size)} bytes exceeds Config.max_entry_bytes={_safe_repr(limit)}")
        self.size = size
        self.limit = limit
        self.position = position


class ConfigError(RaftError):
    """A ``Config`` field is invalid; the message names the field and the bad value."""


# -- storage read errors -----------------------------------------------------------------------


class LogCompacted(RaftError):
    """The requested entries were purged (they are covered by a snapshot)."""


class LogUnavailable(RaftError):
    """The requested entries are not (yet) in the log."""


# -- network -----------------------------------------------------------------------------------


class RPCError(RaftError):
    """An RPC failed. Raised by ``RaftNetwork`` implementations."""


class Unreachable(RPCError):
    """The target cannot be reached now; replication backs off before retrying.

    ``connection_kept`` (keyword only, ``False`` by default): the request was not sent, but
    the connection it would have gone on is up and still holds requests sent before it (the
    TCP client's "not taking": the target has not read what was written to it). ``False``
    says the connection is lost or was refused, and what was on it with it: a leader's
    replication then stops counting the bytes of the requests it gave up on (no answer in
    time) ahead of its next ones; with ``True`` it keeps counting them, as they may still be
    on their way. A network that cannot tell raises it with the default.
    """

    connection_kept: bool = False

    def __init__(self, *args: object, connection_kept: bool = False) -> None:
        super().__init__(*args)
        if connection_kept:
            self.connection_kept = True  # (a field: kept by pickle and copy, ``RaftError``)


class Timeout(RPCError):
    """The RPC did not answer within its time limit."""


class NetworkError(RPCError):
    """A transport failure that may succeed if retried."""


class RemoteError(RPCError):
    """The remote node failed to handle the request (for example it has stopped)."""

    def __init__(self, target: NodeId, source: BaseException | str) -> None:
        super().__init__(f"node {_safe_repr(target)} failed: {source}")
        self.target = target
        self.source = source
