"""The worker-wide registry of the ideal cached prefix's keys (`turnbench.cache.ideal`): the
keys earlier requests of a worker sent or generated, for sharing between sessions.

Why a long text is kept beside its first piece's key: where a match stops inside a message,
its text is compared in 128-character pieces, and only there. A first piece's text is kept
while one text alone has it (a later text compares itself with it, in C); only when two
different texts share a first piece are their pieces hashed and kept as keys (and every later
text's with that first piece). So the common case hashes no piece but the first.
"""

from __future__ import annotations

from collections.abc import Iterable

PIECE_CHARS = 128
"""Characters of message text a piece key stands for, where a match stops inside a message."""
KEY_BYTES = 64
"""What one key costs a registry: its int object and its share of a set's table."""
TEXT_BYTES = 120
"""What a kept first-piece text costs a registry beyond its characters: its str object and
its dict entry."""
_PIECES = ""
"""A first piece's kept text when two texts shared it: its texts are kept as piece keys."""


def _common_pieces(a: str, b: str) -> int:
    """How many leading pieces `a` and `b` share; their first is known to be the same.

    Why a binary search: a slice comparison runs in C, so log2(pieces) of them cost less
    than hashing the pieces one by one."""
    lo = 1
    hi = (min(len(a), len(b)) + PIECE_CHARS - 1) // PIECE_CHARS
    while lo < hi:
        mid = (lo + hi + 1) // 2
        end = mid * PIECE_CHARS
        if a[:end] == b[:end]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _piece_keys(first: int, text: str) -> list[int]:
    """The keys of `text`'s pieces, chained from its first piece's key (`first`, included)."""
    keys = [first]
    for start in range(PIECE_CHARS, len(text), PIECE_CHARS):
        first = hash((first, text[start : start + PIECE_CHARS]))
        keys.append(first)
    return keys


class BlockRegistry:
    """The keys earlier requests of this worker sent or generated, for sharing between
    sessions: two generations of sets, at most `capacity_mb` of them.

    Why generations and not an LRU: adding a request's keys is one C-level `set.update`; a
    key found in the old generation moves to the young one, and when the young one is full
    the old one is dropped, so what is still used survives (least recently used, roughly).
    """

    __slots__ = (
        "_half", "_old", "_old_texts", "_room", "_system", "_texts", "_young", "block_size",
        "swaps",
    )  # fmt: skip

    def __init__(self, block_size: int, capacity_mb: int) -> None:
        self.block_size = block_size
        self._half = max(1, capacity_mb * 1_000_000 // 2)
        """Bytes of one generation."""
        self._young: set[int] = set()
        self._old: set[int] = set()
        self._texts: dict[int, str] = {}
        """The text of each long text's first piece's key, while one text alone has it
        (`_PIECES` once a second one did), young generation."""
        self._old_texts: dict[int, str] = {}
        self._room = self._half
        """The bytes of one generation less what the young generation's kept texts cost:
        what its keys may take."""
        self.swaps = 0
        """How many times the young generation became the old one."""
        self._system = (hash((0, "system", "")), "system", "")
        """The last session's system prompt as a history entry (its key, role, text): most
        sessions of a worker start with the same one."""

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def holds(self, key: int) -> bool:
        """Whether `key` was sent (a key found in the old generation moves to the young)."""
        if key in self._young:
            return True
        if key in self._old:
            self._young.add(key)
            return True
        return False

    def add(self, keys: Iterable[int], first: int = 0, text: str = "") -> None:
        """Hold `keys`, and a long `text` as `keep` does (its first piece's key `first`);
        then the old generation goes if the young one is full.

        Why one long text here, and `keep` for any other: a request's part has one as a
        rule (its new message, or its reply), and every call costs."""
        young = self._young
        young.update(keys)
        if text:
            texts = self._texts
            if first not in texts and first not in self._old_texts:  # `keep`, the usual
                young.add(first)
                texts[first] = text
                self._room -= len(text) + TEXT_BYTES
            else:
                self.keep(first, text)
        if len(young) * KEY_BYTES > self._room:
            self.turn()

    def turn(self) -> None:
        """The young generation is full: it becomes the old one, and the old one goes."""
        self._old, self._young = self._young, set()
        self._old_texts, self._texts = self._texts, {}
        self._room = self._half
        self.swaps += 1

    def keep(self, first: int, text: str) -> None:
        """Hold a long text's first piece's key `first`, with what a later text that shares
        it must compare itself with (then `add`: it drops the old generation when due)."""
        texts = self._texts
        self._young.add(first)
        if first not in texts and first not in self._old_texts:  # the first with it
            texts[first] = text
            self._room -= len(text) + TEXT_BYTES
            return
        kept = texts.get(first)
        if kept is None:
            texts[first] = kept = self._old_texts.pop(first)
        if not kept:
            self._young.update(_piece_keys(first, text))
        elif kept is not text and kept != text:  # a second text: both as piece keys
            texts[first] = _PIECES
            self._young.update(_piece_keys(first, kept))
            self._young.update(_piece_keys(first, text))

    def pieces(self, first: int, text: str) -> int:
        """How many leading pieces of `text` (of more than one piece) were sent, its first
        piece's key `first` being held."""
        kept = self._texts.get(first)
        if kept is None:
            kept = self._old_texts.get(first)
            if kept is None:  # only a text of one piece was sent (or its text was dropped)
                return 1
        if kept:
            return _common_pieces(text, kept)
        held = 1
        for start in range(PIECE_CHARS, len(text), PIECE_CHARS):
            first = hash((first, text[start : start + PIECE_CHARS]))
            if not self.holds(first):
                break
            held += 1
        return held
