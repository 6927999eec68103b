"""Whose data a service node's data directory holds: ``<data-dir>/node.json``.

A Raft node's log and vote belong to one node id. A node started on another node's
directory (two directories swapped, a copied machine image, a typo in ``--data-dir``) would
take over that node's log and vote as its own: it could vote twice in one term, or count as
a copy of entries it never acknowledged. So ``serve`` records the node id and cluster name in
the directory at its first start and refuses, at every later start, a directory recorded for
another node or cluster (``DataDirMismatch``), before it opens anything in it.

A directory that already holds stores but no ``node.json`` (made by an earlier version) is
adopted: the record is written for the node starting on it, once ``Raft.new`` has checked
the stores' own owner records (``check_owner`` of the log store and the state machine;
``owner_mismatch`` words a refusal with the service's options), so the records never disagree.

``lock_data_dir`` makes one process at a time the user of a directory (two ``serve`` started
at once on one directory both found no record, and the last one's record stayed, whichever
of them kept the stores). ``check_stores`` refuses a directory whose log store is gone while its
state machine is there (``log/`` removed, say after it was reported damaged), or whose stores
are both gone while its record is there (a new directory is recorded once its stores exist:
``record_identity``): the node would start with no vote and no log, and could vote twice in a
term or count as holding entries it lost. ``check_not_a_store`` refuses, at a first start, a
directory that is one of a node's stores or inside a node's data directory (``--data-dir
n1/log`` for ``n1``): the node started there as a new one, with no vote and no log, and
wrote its own stores into the other's.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import msgspec

from ..errors import StorageError, StoreOwnerMismatch
from ..storage.rocks.files import NotRegularFile, read_regular_file, replace_durably
from ..validation import MAX_NODE_ID
from .argtypes import check_cluster_name

__all__ = [
    "IDENTITY_FILE", "LOG_DIR", "MAX_RECORD_BYTES", "SM_DIR", "DataDirMismatch", "NoRecordFile", "NodeIdentity", "check_identity",
    "check_not_a_store", "check_stores", "has_stores", "lock_data_dir", "owner_mismatch", "read_identity",
    "read_record_file", "record_identity",
]

IDENTITY_FILE = "node.json"
"""The record's name in the data directory."""

LOG_DIR = "log"
"""The log store's directory in the data directory (``RocksLogStore``): the node's log and vote."""

SM_DIR = "sm"
"""The state machine's directory in the data directory (``KvStateMachine``)."""

class NodeIdentity(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The record: the node id and cluster name the directory's data belongs to.

    Two fields are written by ``openraft-py cluster force-recover`` only (``kv/recover.py``)
    and left out of the file otherwise: ``recovering_to``, the new cluster name while a
    forced recovery is under way (``check_identity`` refuses to start such a directory: the
    recovery did not finish, run it again); ``recovered_from``, the cluster name the node
    had before the forced recovery that made it the sole voter of ``cluster_name``."""

    node_id: int
    cluster_name: str
    recovering_to: str | None = None
    recovered_from: str | None = None


_LENIENT = msgspec.json.Decoder(dict[str, object])


def _unknown_fields(raw: bytes) -> list[str]:
    """The fields of the record ``raw`` other than ``NodeIdentity``'s when it is otherwise a
    readable record (a JSON object with an int ``node_id`` and a str ``cluster_name``): a
    record of a newer version; ``[]`` otherwise."""
    try:
        obj = _LENIENT.decode(raw)
    except msgspec.DecodeError:
        return []
    if type(obj.get("node_id")) is not int or type(obj.get("cluster_name")) is not str:
        return []
    return sorted(k for k in obj if k not in NodeIdentity.__struct_fields__)


class DataDirMismatch(ValueError):
    """The data directory belongs to another node or cluster, or its record is unreadable."""


def _decode(raw: bytes) -> NodeIdentity:
    """The record ``raw``; ``msgspec.DecodeError`` when it is not one, a ``node_id`` out of
    ``[0, MAX_NODE_ID]`` included: no node has that id, so the file is damaged (a record
    of ``-1`` was taken as another node's, and the refusal said "start it with --id -1",
    an id ``serve`` refuses)."""
    found = msgspec.json.decode(raw, type=NodeIdentity)
    if not 0 <= found.node_id <= MAX_NODE_ID:
        raise msgspec.DecodeError(f"its node_id {found.node_id} is not a node id: 0 to 2**63 - 1, so the record "
                                  "is damaged")
    # The names too: ``serve`` records only a name it takes (``check_cluster_name``). One it
    # refuses was taken as another cluster's, and the refusal said "start it with
    # --cluster-name " (empty: a flag serve refuses), writing control characters raw.
    for field in ("cluster_name", "recovering_to", "recovered_from"):
        name = getattr(found, field)
        if name is None:
            continue
        try:
            check_cluster_name(name)
        except ValueError as e:
            raise msgspec.DecodeError(f"its {field} is not a cluster name ({e}), so the record is damaged") from None
    return found


MAX_RECORD_BYTES = 1 << 20
"""The largest record file ``read_record_file`` reads (1 MiB; a record is a few hundred
bytes): a larger one is no record (``NoRecordFile``), refused unread past the bound."""


class NoRecordFile(Exception):
    """What a record's path names is no readable file (``read_record_file``); ``why`` says
    what it is instead, for the caller's refusal."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def read_record_file(path: Path) -> bytes | None:
    """The bytes of the record file at ``path`` (``node.json``, ``catching-up.json``),
    ``None`` only when nothing at all has that name. ``NoRecordFile`` when what is there is
    no readable file: one larger than ``MAX_RECORD_BYTES`` (read no further), a directory, a
    named pipe (never read: it blocked the start for good),
    a symbolic link to itself, or one whose target is gone (the record kept elsewhere, on a
    mount not there now). Invariant: a record that may be
    there is never taken for none; such a link was, and the record's absence means something
    (no identity yet; a node that has caught up and may vote). Other ``OSError`` propagate."""
    try:
        raw = read_regular_file(path, MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            # (One of 16 MiB, copied over it by mistake or sparse, was read whole at each start.)
            raise NoRecordFile(f"it holds more than {MAX_RECORD_BYTES} bytes, far more than any record")
        return raw
    except FileNotFoundError:
        if not path.is_symlink():
            return None
        why = f"it is a symbolic link to {os.readlink(path)!r}, which does not exist"
    except IsADirectoryError:
        why = "it is a directory"
    except NotRegularFile as e:  # (a named pipe: its read waited for a writer, the start with it)
        why = e.strerror or "it is no regular file"
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        why = f"it is a symbolic link that never reaches a file: {e.strerror}"
    raise NoRecordFile(why)


def _read_record(path: Path, node_id: int | None = None) -> bytes | None:
    """The bytes of the record at ``path``, ``None`` when there is none. ``DataDirMismatch``
    when what is there is no readable file (``read_record_file``), with what to do for a
    start of ``node_id`` when given. A link to nothing was taken for no record and replaced
    by a new one of the ``--id`` given, the directory adopted; a directory or a link loop
    raised Python's bare ``OSError``."""
    try:
        return read_record_file(path)
    except NoRecordFile as e:
        advice = "" if node_id is None else (
            f"; it names the node and cluster whose data {path.parent} holds: restore it, or start node {node_id} "
            "on a directory of its own")
        raise DataDirMismatch(f"{path} is not a readable node record ({e.why}){advice}") from None


def check_identity(data_dir: Path, node_id: int, cluster_name: str) -> str:
    """Check ``data_dir``'s record against ``node_id`` and ``cluster_name``, or write it (made
    durable: the file and the directory are fsynced) if there is none. Returns ``"checked"``,
    ``"new"`` (written in an empty directory) or ``"adopted"`` (written in a directory that
    already held something: one made before the record existed). Raises ``DataDirMismatch`` for another node id or cluster name, or a record
    that cannot be read; ``OSError`` if the directory cannot be read or written. Blocking:
    call it in a worker thread."""
    path = data_dir / IDENTITY_FILE
    raw = _read_record(path, node_id)
    if raw is None:
        adopted = any(name != IDENTITY_FILE for name in os.listdir(data_dir))
        record_identity(data_dir, node_id, cluster_name)
        return "adopted" if adopted else "new"
    try:
        found = _decode(raw)
    except msgspec.DecodeError as e:
        unknown = _unknown_fields(raw)
        if unknown:
            # A record with fields this version does not know: a newer release's, met after a
            # downgrade (it was told to restore the record as if damaged).
            raise DataDirMismatch(
                f"{path} is not a readable node record for this version of openraft-py: it holds "
                f"{', '.join(map(repr, unknown))}, which this version does not know (it reads node_id and "
                "cluster_name only): a record written by a newer version of openraft-py? Run that version on "
                f"{data_dir} (a downgrade is refused), or restore the record"
            ) from None
        raise DataDirMismatch(
            f"{path} is not a readable node record ({e}); it names the node and cluster whose data "
            f"{data_dir} holds: restore it, or start node {node_id} on a directory of its own"
        ) from None
    if found.recovering_to is not None:
        raise DataDirMismatch(
            f"{data_dir} holds node {found.node_id} in the middle of a forced recovery from cluster "
            f"{found.cluster_name!r} to cluster {found.recovering_to!r} that did not finish (interrupted?): run "
            f"'openraft-py cluster force-recover --data-dir {data_dir} --new-cluster-name {found.recovering_to} "
            "--i-know-writes-may-be-lost' again to finish it (or the same with --abort instead of the last flag to "
            "give it up, if its old voters came back)"
        )
    if found.node_id != node_id:
        raise DataDirMismatch(
            f"{data_dir} holds the data of node {found.node_id}, not node {node_id}: start it with "
            f"--id {found.node_id}, or give node {node_id} a data directory of its own (a node must "
            "never take over another node's log and vote)"
        )
    if found.cluster_name != cluster_name and found.recovered_from == cluster_name:
        raise DataDirMismatch(
            f"{data_dir} holds the data of node {node_id} of cluster {found.cluster_name!r}: a forced recovery "
            f"(cluster force-recover) made it the only voter of that new cluster, which no node of cluster "
            f"{cluster_name!r} may join: start it with --cluster-name {found.cluster_name}"
        )
    if found.cluster_name != cluster_name:
        raise DataDirMismatch(
            f"{data_dir} holds the data of node {node_id} of cluster {found.cluster_name!r}, not of "
            f"cluster {cluster_name!r}: start it with --cluster-name {found.cluster_name}, or give "
            "it a data directory of its own"
        )
    return "checked"


def owner_mismatch(data_dir: Path, e: StoreOwnerMismatch) -> DataDirMismatch:
    """The ``DataDirMismatch`` for ``data_dir`` whose log store's or state machine's own owner
    record (checked by ``Raft.new``: ``check_owner``) names another node or cluster than the
    one starting, ``e``: its ``node.json`` was removed (the directory was adopted) or agrees
    with the node, and ``log/`` or ``sm/`` came from another node's directory. Worded as
    ``check_identity``'s refusals, with the service's options."""
    if e.what == "log store":
        store_dir, holds = data_dir / LOG_DIR, "the log and vote"
    else:
        store_dir, holds = data_dir / SM_DIR, "the state machine"
    if e.node_id != e.expected_node_id:
        return DataDirMismatch(
            f"{store_dir} holds {holds} of node {e.node_id}, not node {e.expected_node_id} (its own record "
            f"says so): start it with --id {e.node_id}, or give node {e.expected_node_id} a data directory of its "
            "own (a node must never take over another node's log and vote)"
        )
    return DataDirMismatch(
        f"{store_dir} holds {holds} of node {e.node_id} of cluster {e.cluster_name!r}, not of cluster "
        f"{e.expected_cluster_name!r} (its own record says so): start it with --cluster-name {e.cluster_name}, or "
        "give it a data directory of its own"
    )


_DATABASE_FILES = ("CURRENT", "OPENRAFT-ACKED")
"""Files of a RocksDB database directory: RocksDB's own, and the stores' acknowledged mark."""


def check_not_a_store(data_dir: Path) -> None:
    """Raise ``DataDirMismatch`` if ``data_dir``, a directory without a record (a first
    start), is a store's database (``log/``, ``sm/db``), a state machine's directory
    (``sm/``), or lies within two levels of a recorded data directory (``sm/snapshots``):
    ``--data-dir n1/log`` given for ``n1``. Such a node started as a new one, with no vote
    and no log (it could vote twice in a term, or lose acknowledged writes), and made its
    stores and record inside the other's. Blocking: call it in a worker thread."""
    for name in _DATABASE_FILES:
        for db in (data_dir, data_dir / "db"):
            if os.path.exists(db / name):
                what = "a store's database" if db == data_dir else "a state machine's directory"
                raise DataDirMismatch(
                    f"{data_dir} is {what} (it holds {(db / name).relative_to(data_dir)}), not a node's data "
                    f"directory: give --data-dir the directory that holds the node's {LOG_DIR}/, {SM_DIR}/ and "
                    f"{IDENTITY_FILE}, or an empty one for a new node"
                )
    for up in list(data_dir.resolve().parents)[:2]:
        if os.path.exists(up / IDENTITY_FILE):
            raise DataDirMismatch(
                f"{data_dir} is inside the data directory {up} (it holds {IDENTITY_FILE}): start that node with "
                f"--data-dir {up}, or give this node a directory of its own outside it"
            )


def _entries(path: Path) -> int | None:
    """How many entries the directory ``path`` holds, at most 1 (0: missing or empty);
    ``None`` when it is not a directory (the store's own open names that). ``OSError`` if it
    cannot be listed."""
    try:
        with os.scandir(path) as it:
            return 0 if next(it, None) is None else 1
    except FileNotFoundError:
        return 0
    except NotADirectoryError:
        return None


def record_identity(data_dir: Path, node_id: int, cluster_name: str, **fields: str | None) -> None:
    """Write ``data_dir``'s record for ``node_id`` of ``cluster_name``, durably (the file and
    the directory are fsynced). A new directory gets it once its stores exist (so a record
    means the stores were made: ``check_stores``). ``fields``: ``NodeIdentity``'s forced
    recovery fields (``recovering_to``, ``recovered_from``). Blocking: call it in a worker
    thread."""
    record = NodeIdentity(node_id, cluster_name, **fields)
    replace_durably(str(data_dir / IDENTITY_FILE), msgspec.json.encode(record) + b"\n")


def read_identity(data_dir: Path) -> NodeIdentity:
    """``data_dir``'s record; ``FileNotFoundError`` when it has none, ``DataDirMismatch``
    when it cannot be read (no readable file, ``read_record_file``: a link to nothing is
    named so, not taken for none). Blocking: call it in a worker thread."""
    path = data_dir / IDENTITY_FILE
    raw = _read_record(path)
    if raw is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
    try:
        return _decode(raw)
    except msgspec.DecodeError as e:
        raise DataDirMismatch(f"{path} is not a readable node record ({e})") from None


def has_stores(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a log store or a state machine (non-empty ``log/``, ``sm/db``)."""
    return _entries(data_dir / LOG_DIR) != 0 or _entries(data_dir / SM_DIR / "db") != 0


def check_stores(data_dir: Path, recorded: bool) -> None:
    """Raise ``StorageError`` if ``data_dir``'s log store is missing (or empty) while its state
    machine holds a database, or, when the directory had its record (``recorded``: it is
    written once the stores exist), if both are. A node creates its log store before its state
    machine, so either means data was removed: the node's vote and log are gone, and a node
    started on the rest would take part in elections and replication as if it had never voted
    or acknowledged anything (it could vote twice in a term, or let an acknowledged write be
    lost). Blocking: call it in a worker thread."""
    log_dir, sm_db = data_dir / LOG_DIR, data_dir / SM_DIR / "db"
    for part, what in ((log_dir, "log store"), (data_dir / SM_DIR, "state machine"), (sm_db, "state machine")):
        # A store kept on another disk through a link, that disk not mounted: its data is out
        # of reach, not gone. It read as removed ("empty the whole data directory"), or as
        # "not a directory", or as a bare "No such file or directory".
        if os.path.islink(part) and not os.path.exists(part):
            raise StorageError(f"opening {what} at {str(part)!r}", FileNotFoundError(
                f"{part} is a symbolic link to {os.readlink(part)!r}, which leads to nothing (is its disk mounted?): "
                f"the node's {what} is there; mount it (or put the link back as it was), then start the node again"))
    if recorded and _entries(log_dir) == 0 and _entries(sm_db) == 0:
        raise StorageError(
            f"opening log store at {str(log_dir)!r}",
            FileNotFoundError(
                f"{data_dir} holds the node's record ({IDENTITY_FILE}) but neither its log ({log_dir}) nor its state "
                "machine: the node's data was removed, and a node that forgot its vote could vote twice in a term "
                "or lose acknowledged writes. Treat the node as a failed machine: empty the whole data directory "
                f"({IDENTITY_FILE} too) and start it again (it catches up with the cluster before it votes), or replace "
                f"it with a new node id (if the node never ran on this directory, remove {IDENTITY_FILE})"
            ),
        )
    if _entries(log_dir) == 0 and _entries(sm_db) == 1:
        raise StorageError(
            f"opening log store at {str(log_dir)!r}",
            FileNotFoundError(
                f"{log_dir} is missing or empty but {sm_db.parent} holds the node's state machine: the node's "
                "log and vote are gone (removed?), and a node that forgot its vote could vote twice in a term "
                "or lose acknowledged writes. Put the log directory back as it was; otherwise treat the node as "
                f"a failed machine: empty the whole data directory ({IDENTITY_FILE} too) and start it again (it "
                "catches up with the cluster before it votes), or replace it with a new node id"
            ),
        )


def lock_data_dir(data_dir: Path) -> int:
    """Take an exclusive ``flock`` on the directory ``data_dir`` and return its file descriptor
    (closing it releases the lock; so does the end of the process, however it ends). Raises
    ``StorageError`` when another process holds it (another ``serve`` on the same directory),
    ``OSError`` if the directory cannot be opened."""
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(
            f"opening the data directory {str(data_dir)!r}: another process uses it (another serve with the same "
            "--data-dir?); give each node a data directory of its own"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd
