"""Replicas behind a router: which engine copy serves a request.

Why in the simulator: whether a multi-turn session keeps landing on the replica that holds
its prefix cache is what decides its TTFT behind a real router (vLLM production-stack, SGLang
Model Gateway, llm-d, Dynamo). Each replica has its own batch and its own prefix cache, so a
session that moves pays a cold prefill, exactly as it would on a real fleet.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence

from turnbench.sim.config import RouterKind, SimConfig
from turnbench.sim.prefix_cache import PrefixCache
from turnbench.sim.scheduler import Scheduler


class Replica:
    """One engine copy: its own FIFO batch, its own prefix cache, its own counters."""

    def __init__(self, index: int, cfg: SimConfig) -> None:
        self.name = f"replica-{index}"
        self.scheduler = Scheduler(cfg.max_num_seqs, cfg.max_waiting)
        self.cache = PrefixCache(cfg.kv_cache_tokens, cfg.block_size)
        self.requests = 0
        """Requests routed here."""
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def running(self) -> int:
        """Requests holding a slot (`vllm:num_requests_running`)."""
        return self.scheduler.running

    @property
    def waiting(self) -> int:
        """Requests queued for a slot (`vllm:num_requests_waiting`)."""
        return self.scheduler.waiting

    @property
    def evicted_blocks(self) -> int:
        """Prefix-cache blocks evicted to make room."""
        return self.cache.evicted_blocks

    @property
    def kv_usage(self) -> float:
        """Prefix-cache usage, 0..1 (`vllm:kv_cache_usage_perc`)."""
        return self.cache.usage

    @property
    def load(self) -> int:
        """What least-loaded routing compares: running plus waiting requests."""
        return self.scheduler.running + self.scheduler.waiting


def sticky_index(session: str, n: int) -> int:
    """The replica of a session: CRC32 of its id modulo the replica count.

    Why CRC32 and not Python's `hash`: string hashes are salted per process, so a restarted
    simulator would move every session; a router's consistent choice must not depend on it.
    """
    return zlib.crc32(session.encode("utf-8", "surrogatepass")) % n


def least_loaded_index(loads: Sequence[int], start: int) -> int:
    """The replica with the fewest running plus waiting requests; a tie goes to the first
    one at or after `start` (cyclically).

    Why the rotating start: with ties broken by the lowest index, an idle fleet would send
    every request to replica 0 while the others stay cold.
    """
    n = len(loads)
    best = start % n
    for step in range(1, n):
        i = (start + step) % n
        if loads[i] < loads[best]:
            best = i
    return best


class Router:
    """Picks the replica of each request by the configured policy."""

    def __init__(self, kind: RouterKind, replicas: Sequence[Replica], seed: int) -> None:
        self.kind = kind
        self.replicas = replicas
        self._next = 0
        """Round-robin's next replica, and least-loaded's first choice among ties."""
        self._rng = random.Random(f"turnbench-sim-router:{seed}")

    def choose(self, session: str | None) -> Replica:
        """The replica for a request of `session` (the value of its session header, if any).

        A `sticky` request without a session header has nothing to stick to: it goes to the
        least-loaded replica, as a hashing router sends key-less requests to a free one.
        """
        replicas = self.replicas
        n = len(replicas)
        kind = self.kind
        if kind == "sticky" and session is not None:
            index = sticky_index(session, n)
        elif kind == "round-robin":
            index = self._next % n
            self._next = index + 1
        elif kind == "random":
            index = self._rng.randrange(n)
        else:  # least-loaded, and sticky without a session
            index = least_loaded_index([r.load for r in replicas], self._next)
            self._next = index + 1
        replica = replicas[index]
        replica.requests += 1
        return replica
