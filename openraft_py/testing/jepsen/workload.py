"""The client workloads: concurrent HTTP clients recording every operation into a ``History``.

Two workloads, each over "independent" keys (Jepsen's trick to keep every per-key history
short enough to check: a key slot moves on to a fresh key after ``ops_per_key`` operations,
or sooner once ``max_info_per_key`` of its writes ended with an unknown outcome):

- ``register``: a few hot keys (``register_slots``), every client contending on them;
- ``multi``: many keys (``multi_slots``), operations spread across them.

Each client is bound to one node (client ``c`` to node ``c % n + 1``): it sends everything
there and follows the 307 to the leader; ``local`` reads are answered by the bound node
itself. The mix per operation: ``get`` (``linearizable``, ``lease`` or ``local``), ``put``
(a unique value ``"<client>-<seq>"``, so every value names its write), ``cas`` (expected: a
value recently seen for that key, or absent) and ``delete``. After an ``info`` outcome the
client takes a new client number (its old call may still be in flight).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from .history import History, Record
from .kvclient import KvHttp, Outcome

__all__ = ["WorkloadConfig", "Workload"]


@dataclass
class WorkloadConfig:
    """Knobs of the client side. ``think``: seconds a client waits between two operations
    (keeps the load modest on a small machine); ``ops_per_key`` / ``max_info_per_key``: a
    key slot moves to a fresh key after that many operations / writes of unknown outcome;
    ``timeout``: seconds per call; ``mix``: relative weights of the operation
    kinds; ``workloads``: which workloads run (clients alternate between them)."""

    clients: int = 6
    workloads: tuple[str, ...] = ("register", "multi")
    register_slots: int = 2
    multi_slots: int = 12
    ops_per_key: int = 120
    max_info_per_key: int = 4
    think: float = 0.01
    timeout: float = 4.0
    mix: dict[str, float] = field(default_factory=lambda: {
        "get-linearizable": 2.0, "get-lease": 2.0, "get-local": 1.0,
        "put": 2.5, "cas": 2.0, "delete": 0.5})


class _Slots:
    """Key slots of one workload, each rotating to a fresh key after ``per_key`` operations
    or ``max_info`` writes of unknown outcome (each of those may take effect at any later
    time, so the checker's search grows exponentially with their number on one key)."""

    def __init__(self, prefix: str, n: int, per_key: int, max_info: int) -> None:
        self.prefix = prefix
        self.gen = [0] * n
        self.count = [0] * n
        self.infos = [0] * n
        self.per_key = per_key
        self.max_info = max_info
        self.recent: dict[str, list[str | None]] = {}
        self.keys: set[str] = set()

    def pick(self, rng: random.Random) -> str:
        s = rng.randrange(len(self.gen))
        self.count[s] += 1
        if self.count[s] > self.per_key or self.infos[s] >= self.max_info:
            self.count[s] = 1
            self.infos[s] = 0
            self.gen[s] += 1
        key = f"{self.prefix}{s}.{self.gen[s]}"
        self.keys.add(key)
        return key

    def unknown_write(self, key: str) -> None:
        """A write on ``key`` ended ``info``: count it against the key's slot."""
        slot, _, gen = key[len(self.prefix):].partition(".")
        s = int(slot)
        if self.gen[s] == int(gen):
            self.infos[s] += 1

    def seen(self, key: str, value: str | None) -> None:
        r = self.recent.setdefault(key, [])
        r.append(value)
        del r[:-4]


class Workload:
    """Runs ``cfg.clients`` clients against ``addrs`` (node id -> HTTP address) until
    ``stop`` is set, recording into ``history``; ``t0`` is the run's clock origin
    (``time.monotonic()``)."""

    def __init__(self, cfg: WorkloadConfig, addrs: dict[int, str], history: History, rng: random.Random,
                 t0: float) -> None:
        self.cfg = cfg
        self.addrs = addrs
        self.history = history
        self.rng = rng
        self.t0 = t0
        self.slots = {"register": _Slots("r", cfg.register_slots, cfg.ops_per_key, cfg.max_info_per_key),
                      "multi": _Slots("m", cfg.multi_slots, cfg.ops_per_key, cfg.max_info_per_key)}
        kinds = list(cfg.mix)
        self._kinds = kinds
        self._weights = [cfg.mix[k] for k in kinds]

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def keys(self) -> set[str]:
        """Every key any client used."""
        return set().union(*(s.keys for s in self.slots.values()))

    async def run(self, stop: asyncio.Event) -> None:
        """Run every client until ``stop``; returns when all have finished their last call."""
        async with KvHttp(self.cfg.timeout) as http:
            await asyncio.gather(*(self._client(c, http, stop) for c in range(self.cfg.clients)))

    async def _client(self, c: int, http: KvHttp, stop: asyncio.Event) -> None:
        ids = sorted(self.addrs)
        addr = self.addrs[ids[c % len(ids)]]
        slots = self.slots[self.cfg.workloads[c % len(self.cfg.workloads)]]
        rng = random.Random(self.rng.random())
        process = c
        seq = 0
        while not stop.is_set():
            seq += 1
            key = slots.pick(rng)
            kind = rng.choices(self._kinds, self._weights)[0]
            rec = Record(client=process, op=kind.split("-")[0], key=key, call=self.now())
            out: Outcome
            if kind.startswith("get-"):
                rec.consistency = kind[4:]
                self.history.add(rec)
                out = await http.get(addr, key, rec.consistency)
            elif kind == "put":
                rec.value = f"{process}-{seq}"
                self.history.add(rec)
                out = await http.put(addr, key, rec.value)
            elif kind == "delete":
                self.history.add(rec)
                out = await http.delete(addr, key)
            else:
                recent = slots.recent.get(key) or [None]
                rec.expected = rng.choice(recent)
                rec.value = f"{process}-{seq}"
                self.history.add(rec)
                out = await http.cas(addr, key, rec.expected, rec.value)
            rec.ret = self.now()
            rec.outcome = out.kind
            rec.node = out.node
            rec.error = out.error
            if out.kind == "ok":
                if rec.op == "get":
                    rec.result = out.value
                    slots.seen(key, out.value)
                elif rec.op == "cas":
                    applied, current = out.value
                    rec.result = applied
                    slots.seen(key, current)
                elif rec.op == "put":
                    slots.seen(key, rec.value)
            elif out.kind == "info":
                process += self.cfg.clients  # a fresh process: the old call may still land
                slots.unknown_write(key)
            if out.kind != "ok":
                await asyncio.sleep(0.05 + rng.random() * 0.1)  # back off a little on errors
            elif self.cfg.think > 0:
                await asyncio.sleep(self.cfg.think)
