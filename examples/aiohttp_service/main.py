"""An existing aiohttp web service that embeds a replicated counter.

Run the demo (from the repository root): three node processes on 127.0.0.1, increments sent
to a follower (forwarded to the leader) and to the leader, linearizable reads from every node::

    python examples/aiohttp_service/main.py

Run one node yourself (three terminals; ``--init`` on exactly one of them)::

    python examples/aiohttp_service/main.py node --id 1 --init \\
        --peer 1=127.0.0.1:7001/127.0.0.1:8001 --peer 2=127.0.0.1:7002/127.0.0.1:8002 \\
        --peer 3=127.0.0.1:7003/127.0.0.1:8003
    curl -X POST -d '{"by": 5}' http://127.0.0.1:8002/counter/incr
    curl http://127.0.0.1:8003/counter
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from counter_cluster import LocalCluster
from counter_service import CounterOptions, Peer, add_raft_counter, parse_peer


async def hello(request: web.Request) -> web.Response:
    """A route the service had before it embedded Raft."""
    return web.Response(text="hello from an aiohttp service with a replicated counter\n")


def make_app(options: CounterOptions) -> web.Application:
    """The web service: its own routes, plus the replicated counter."""
    app = web.Application()
    app.router.add_get("/", hello)
    add_raft_counter(app, options)
    return app


def peer_arg(text: str) -> tuple[int, Peer]:
    """``--peer``'s type: ``parse_peer``, its ``ValueError`` as argparse's usage error."""
    try:
        return parse_peer(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_node(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Serve one node until SIGINT / SIGTERM (aiohttp then stops the Raft node cleanly)."""
    peers: dict[int, Peer] = {}
    for node_id, peer in args.peer:
        if node_id in peers:
            parser.error(f"--peer {node_id}= is given twice")
        peers[node_id] = peer
    if args.id not in peers:
        parser.error(f"--id {args.id} has no --peer entry")
    options = CounterOptions(node_id=args.id, peers=peers, initialize=args.init)
    host, _, port = peers[args.id].http.rpartition(":")
    web.run_app(make_app(options), host=host, port=int(port), print=lambda msg: print(msg, flush=True))


async def _post(session: aiohttp.ClientSession, url: str, by: int) -> dict[str, object]:
    async with session.post(url, json={"by": by}) as r:
        body: dict[str, object] = await r.json()
        if r.status != 200:
            raise RuntimeError(f"POST {url}: {r.status} {body}")
        return body


async def demo(directory: Path) -> list[int]:
    """Start three processes, increment through a follower and the leader, read from every
    node; return the values read."""
    cluster = await LocalCluster.start(directory)
    try:
        leader = await cluster.wait_for_leader()
        follower = next(i for i in cluster.peers if i != leader)
        print(f"3 node processes up; node {leader} leads")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            r = await _post(session, cluster.url(follower, "/counter/incr"), 2)
            print(f"POST /counter/incr by 2 to follower {follower}: {r}")
            r = await _post(session, cluster.url(leader, "/counter/incr"), 3)
            print(f"POST /counter/incr by 3 to leader {leader}:   {r}")
            values = []
            for i in cluster.peers:
                async with session.get(cluster.url(i, "/counter")) as resp:
                    body = await resp.json()
                print(f"GET /counter on node {i}: {body}")
                values.append(int(body["value"]))
        return values
    finally:
        codes = cluster.stop()
        print(f"stopped the processes (exit codes {codes})")


def main() -> None:
    """``node``: run one node; no sub-command: the demo."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    node = sub.add_parser("node", help="run one node", allow_abbrev=False)
    node.add_argument("--id", type=int, required=True, help="this node's id")
    node.add_argument(
        "--peer", action="append", default=[], type=peer_arg, help="ID=RAFT_HOST:PORT/HTTP_HOST:PORT, one per node"
    )
    node.add_argument("--init", action="store_true", help="initialize the cluster (one node only)")
    args = parser.parse_args()
    if args.command == "node":
        run_node(node, args)
    else:
        with tempfile.TemporaryDirectory(prefix="openraft-counter-") as tmp:
            asyncio.run(demo(Path(tmp)))


if __name__ == "__main__":
    main()
