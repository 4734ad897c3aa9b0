"""An LRU prefix cache of KV blocks, counted in tokens, as vLLM's automatic prefix caching.

Why chained block hashes: a block is reusable only if everything before it is identical too,
so each block's key hashes its parent's key with its own tokens; looking up a prompt walks
the chain from the start and stops at the first miss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(tokens: Sequence[str], block_size: int, parent: int = 0) -> list[int]:
    """Chained keys of the full blocks of `tokens` (a partial last block is never cached).

    `parent` continues a chain: the key of the block just before `tokens[0]` (0 at the start).

    Why Python's `hash`: the keys live only inside one process and are never persisted, and
    it is several times cheaper than a cryptographic digest on the request path.
    """
    keys: list[int] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, *tokens[start : start + block_size]))
        keys.append(parent)
    return keys


class PrefixCache:
    """Bounded LRU set of block keys; capacity `capacity_tokens // block_size` blocks."""

    def __init__(self, capacity_tokens: int, block_size: int) -> None:
        self.block_size = block_size
        self.capacity_blocks = capacity_tokens // block_size
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.evicted_blocks = 0
        """Blocks dropped to make room (`turnbench_sim_prefix_cache_evicted_blocks_total`)."""

    def match(self, keys: Sequence[int], prompt_tokens: int) -> int:
        """Return the cached tokens of a prompt: its longest cached prefix in whole blocks.

        Why the cap at `prompt_tokens - 1`: as in vLLM, the last prompt token is always
        computed to produce the first output token, so a fully cached prompt whose length is
        a multiple of the block size still recomputes its last block. Hits are touched (MRU).
        """
        usable = max(0, (prompt_tokens - 1) // self.block_size)
        hit = 0
        for key in keys[:usable]:
            if key not in self._blocks:
                break
            self._blocks.move_to_end(key)
            hit += 1
        return hit * self.block_size

    def insert(self, keys: Sequence[int]) -> None:
        """Insert or touch blocks in order, evicting the least recently used beyond capacity."""
        if self.capacity_blocks <= 0:
            return
        blocks = self._blocks
        for key in keys:
            if key in blocks:
                blocks.move_to_end(key)
            else:
                blocks[key] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
            self.evicted_blocks += 1

    @property
    def used_tokens(self) -> int:
        """Tokens held by cached blocks."""
        return len(self._blocks) * self.block_size

    @property
    def usage(self) -> float:
        """Fraction of the capacity in use, 0..1 (`vllm:kv_cache_usage_perc`)."""
        if self.capacity_blocks <= 0:
            return 0.0
        return len(self._blocks) / self.capacity_blocks
