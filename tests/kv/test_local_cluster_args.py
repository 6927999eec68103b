"""``LocalCluster`` (the Python API behind ``cluster up``) refuses the settings ``serve``
would refuse before it makes anything, with ``serve``'s messages; it used to take them,
and a bad value surfaced later from a child process that did not start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv.local_cluster import ClusterError, LocalCluster
from openraft_py.kv.node import DEFAULT_MAX_BODY, MIN_MAX_BODY, ServeOptions
from openraft_py.network.wire import MAX_NAME_LEN

pytestmark = pytest.mark.timeout(30)

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"raft_config": {"heartbeat_intervall": 50}}, ValueError, "--raft-config: unknown Config fields ['heartbeat_intervall']"),
    ({"raft_config": {"heartbeat_interval": "50"}}, ValueError, "--raft-config: Expected `int`, got `str`"),
    ({"raft_config": {"election_timeout_min": 100, "election_timeout_max": 50}}, ValueError,
     "--raft-config: invalid Config.election_timeout_min=100"),
    ({"raft_config": {"cluster_name": "other"}}, ValueError, "differs from --cluster-name"),
    ({"raft_config": [("heartbeat_interval", 50)]}, TypeError, "--raft-config is a dict of Config fields, got list"),
    ({"max_body": MIN_MAX_BODY - 1}, ValueError, f"--max-body must be at least {MIN_MAX_BODY} bytes"),
    ({"max_body": 10**12}, ValueError, f"--max-body {10**12} is more than a request can use"),
    ({"max_body": "1048576"}, TypeError, "--max-body is an int (bytes), got str"),
    ({"max_body": True}, TypeError, "--max-body is an int (bytes), got bool"),
    ({"cluster_name": ""}, ValueError, "--cluster-name: a cluster name is a non-empty string"),
    ({"cluster_name": "n" * (MAX_NAME_LEN + 1)}, ValueError, f"at most {MAX_NAME_LEN} characters"),
    ({"log_level": "verbose"}, ValueError, "--log-level must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"),
    ({"log_level": None}, TypeError, "--log-level is a str, got NoneType"),
]


@pytest.mark.parametrize("kw, error, message", BAD, ids=[next(iter(kw)) + f"-{i}" for i, (kw, _e, _m) in enumerate(BAD)])
def test_bad_settings_are_refused_before_anything_is_made(tmp_path: Path, kw: dict[str, Any],
                                                          error: type[Exception], message: str) -> None:
    root = tmp_path / "cluster"
    with pytest.raises(error) as info:
        LocalCluster(3, root=root, **kw)
    assert message in str(info.value)
    assert not root.exists()  # nothing made: no directory, no lock, no ports


def test_the_messages_are_serve_s_own(tmp_path: Path) -> None:
    """The same values in ``ServeOptions.check`` (what ``serve`` runs) say the same."""
    for kw, _error, message in BAD:
        if "log_level" in kw:
            continue  # (serve's flag parser refuses it, with argparse's words)
        opts = ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir=str(tmp_path / "d"),
                            **({"max_body": DEFAULT_MAX_BODY} | kw))
        with pytest.raises((ValueError, TypeError)) as info:
            opts.check()
        if "cluster_name" not in kw:  # (serve names --cluster-name in its own words)
            assert message in str(info.value), (kw, info.value)


def test_good_settings_are_taken(tmp_path: Path) -> None:
    cluster = LocalCluster(1, root=tmp_path / "c", raft_config={"heartbeat_interval": 50}, max_body=DEFAULT_MAX_BODY,
                           cluster_name="c1", log_level="DEBUG")
    try:
        assert "--max-body" in cluster.nodes[1].extra_args
    finally:
        cluster.close()


@pytest.mark.parametrize("level", ["debug", "Warning"])
def test_a_log_level_in_any_case_is_taken_as_serve_takes_it(tmp_path: Path, level: str) -> None:
    """``serve --log-level`` takes a level in any case (it upper-cases it), and ``LocalCluster``
    passes the level on to it: "debug" ran a cluster before ``check_settings``, which refused
    it ("--log-level must be one of ...")."""
    cluster = LocalCluster(1, root=tmp_path / "c", log_level=level)
    try:
        extra = cluster.nodes[1].extra_args
        assert extra[extra.index("--log-level") + 1].upper() == level.upper()
    finally:
        cluster.close()


def _a_nodes_data_dir(path: Path, node_id: int = 1) -> Path:
    """What ``serve`` leaves in a data directory at its first start (enough to recognise one)."""
    from openraft_py.kv.identity import IDENTITY_FILE, LOG_DIR

    (path / LOG_DIR).mkdir(parents=True)
    (path / IDENTITY_FILE).write_text(f'{{"node_id":{node_id},"cluster_name":"openraft-py"}}\n')
    return path


def test_a_serve_node_s_data_directory_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """``cluster up --data-dir`` naming one ``serve`` node's data directory: it wrote its
    ``cluster.json``, ``cluster.lock``, ``n1/``, ``n1.log`` ... into that node's directory (the
    node's start then refused ``DIR/n1`` as inside a data directory), and left them there."""
    node = _a_nodes_data_dir(tmp_path / "n1")
    before = sorted(p.name for p in node.iterdir())
    with pytest.raises(ClusterError) as info:
        LocalCluster(3, root=node)
    assert "is a node's data directory" in str(info.value), str(info.value)
    assert sorted(p.name for p in node.iterdir()) == before, "it wrote into the node's data directory"


def test_a_node_record_that_is_a_link_to_nothing_still_marks_a_node_s_data(tmp_path: Path) -> None:
    """``node.json`` a symbolic link whose target is gone (the record kept on a mount not
    there now) is a record all the same, as ``serve`` and ``force-recover`` take it: the
    root's check (``Path.exists``, which follows the link) took it for none."""
    from openraft_py.kv.identity import IDENTITY_FILE

    node = tmp_path / "n1"
    node.mkdir()
    (node / IDENTITY_FILE).symlink_to(tmp_path / "gone" / IDENTITY_FILE)
    with pytest.raises(ClusterError) as info:
        LocalCluster(3, root=node)
    assert "is a node's data directory" in str(info.value), str(info.value)
    with pytest.raises(ClusterError) as info:
        LocalCluster(3, root=tmp_path)
    assert "no cluster.json" in str(info.value) and "n1" in str(info.value), str(info.value)


def test_nodes_data_under_a_root_without_cluster_json_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """``cluster up --data-dir DIR`` where ``DIR/n1`` ... hold ``serve`` nodes' data that no
    ``cluster up`` recorded (no ``DIR/cluster.json``): it picked new ports for them and wrote
    ``cluster.json``, then started the nodes there, on other ports than their membership
    names (a cluster that never elects a leader), appending to their logs ``DIR/nI.log``."""
    for i in (1, 2, 3):
        _a_nodes_data_dir(tmp_path / f"n{i}", i)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ClusterError) as info:
        LocalCluster(3, root=tmp_path)
    assert "no cluster.json" in str(info.value) and "n1" in str(info.value), str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "it wrote into the directory"
