"""``Simulation(seed, nodes=N)`` / ``--nodes N``: runs that start with N voters (production
runs five or seven), with every other choice of the seed kept; the checks are the same."""

from __future__ import annotations

import pytest

from openraft_py.testing import sim
from openraft_py.testing.sim import MAX_NODES, Simulation, run_seed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nodes", [5, 7])
def test_a_run_starts_with_the_voters_it_is_given_and_is_checked_clean(nodes: int) -> None:
    r = run_seed(3, nodes=nodes)
    assert r.ok, f"{r.violation}\n" + "\n".join(r.trace[-40:])
    assert f"start: {nodes} nodes (+" in r.trace[0]
    if nodes == MAX_NODES:
        assert "(+0 spare)" in r.trace[0]  # spare ids go up to MAX_NODES: none are left
    # A run given its size replays only with it: the command says so.
    assert r.replay_command().endswith(f"--seed 3 --nodes {nodes} --trace")
    assert r.nodes == nodes


@pytest.mark.timeout(120)
def test_the_size_a_seed_draws_given_as_nodes_is_the_same_run() -> None:
    """The seed's draw of 3 or 5 is made whether or not ``nodes`` is given: a seed given the
    size it draws runs byte for byte as without it, and the default runs are unchanged."""
    for seed in (3, 4):
        plain = run_seed(seed)
        drawn = int(plain.trace[0].split("start: ")[1].split()[0])
        assert plain.replay_command().endswith(f"--seed {seed} --trace")
        assert run_seed(seed, nodes=drawn).digest() == plain.digest()


@pytest.mark.parametrize("bad", [0, 1, 2, MAX_NODES + 1, 100, True, 5.0, "5"])
def test_a_node_count_out_of_range_or_not_an_int_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=f"nodes must be an integer from 3 to {MAX_NODES}"):
        Simulation(1, nodes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "1", "--nodes", "8"], f"argument --nodes: '8' is not a node count from 3 to {MAX_NODES}"),
    (["--seed", "1", "--nodes", "2"], "argument --nodes: '2' is not a node count from 3"),
    (["--seed", "1", "--nodes", "five"], "argument --nodes: 'five' is not an integer written in the digits 0-9"),
    # ``int`` read ``1_0`` as seed 10: a replay of another seed than the one written.
    (["--seed", "1_0"], "argument --seed: '1_0' is not an integer written in the digits 0-9"),
    (["--seeds", "1", "--start", "+5"], "argument --start: '+5' is not an integer written in the digits 0-9"),
    (["--lease", "1", "--nodes", "5"], "--lease runs the lease-read scenario, which takes no --nodes"),
])
def test_cli_refuses_a_bad_node_count_or_seed(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        sim.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_cli_runs_a_seed_with_the_node_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seed", "3", "--nodes", "7", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "start: 7 nodes (+0 spare)" in out and "seed 3: ok" in out
