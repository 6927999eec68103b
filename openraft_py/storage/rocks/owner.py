"""The owner record of our stores: the node id and cluster name (``raft.owner_cluster_name``)
of the node whose data a store holds, written by ``check_owner`` at the first start of a node on
the store (``Raft.new`` calls it), checked at every later one. See "Whose store it is" in
``docs/design/durability.md``.
"""

from __future__ import annotations

import msgspec

from ...errors import StoreOwnerMismatch
from ...types import NodeId
from ...validation import MAX_NODE_ID, check_node_id

__all__ = ["StoreOwner", "decode_owner", "owner_to_record"]


class StoreOwner(msgspec.Struct):
    """The owner record (msgspec-msgpack, a map): the node id and the cluster name of the
    node that first started on the store."""

    node_id: int
    cluster_name: str


_dec_owner = msgspec.msgpack.Decoder(StoreOwner)


def decode_owner(key: bytes, raw: bytes) -> StoreOwner:
    """The record stored at ``key``; ``ValueError`` naming the key when it does not decode or
    holds a node id out of range or an empty cluster name (a damaged record is never taken)."""
    try:
        owner = _dec_owner.decode(raw)
    except msgspec.DecodeError as e:
        raise ValueError(f"the stored {key.decode()!r} does not decode: {e}") from e
    if not 0 <= owner.node_id <= MAX_NODE_ID or not owner.cluster_name:
        raise ValueError(f"the stored {key.decode()!r} is damaged: {owner!r}")
    return owner


def owner_to_record(
    owner: StoreOwner | None, node_id: NodeId, cluster_name: str, subject: str, what: str
) -> StoreOwner | None:
    """What ``check_owner(node_id, cluster_name)`` of a store (``what``: "log store", "state
    machine") whose record is ``owner`` must write: the new record when it has none, ``None``
    when ``owner`` names this node and cluster. ``StoreOwnerMismatch`` (``subject`` says what
    was being done) when it names another; ``TypeError``/``ValueError`` for a ``node_id`` that
    is no node id or a ``cluster_name`` that is not a ``str`` or is empty."""
    node_id = check_node_id(node_id)
    if not isinstance(cluster_name, str):
        raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {cluster_name!r}")
    if not cluster_name:
        raise ValueError("cluster_name must not be empty")
    if owner is None:
        return StoreOwner(node_id, cluster_name)
    if owner.node_id != node_id or owner.cluster_name != cluster_name:
        raise StoreOwnerMismatch(subject, owner.node_id, owner.cluster_name, node_id, cluster_name, what=what)
    return None
