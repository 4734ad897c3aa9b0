"""The ideal cached prefix of each request: what an unbounded prefix cache would hold.

A request's ideal is the longest prefix of its prompt that earlier requests of the run sent,
or were answered with (vLLM, SGLang and llama.cpp keep the KV of generated tokens too), in
whole blocks of the server's block size, and never the prompt's last token (it is always
computed, to produce the first output token). The server's reported cached tokens are
measured against it.

Why chained keys, as the simulator's cache keeps its blocks: a piece of prompt is reusable
only when everything before it is identical, so each key hashes its parent's key with its own
text; matching walks the chain and stops at the first key nobody sent.

Why pieces of text and not tokens: the client has no tokenizer on the hot path, and hashing a
128-character slice costs a fraction of splitting and hashing its two dozen words. A message is
its template header (`<|im_start|>role\\n`: two tokens), its text in 128-character pieces (a
piece weighs its share of the message's tokens), and its end marker (one token). Where
sharing stops at a message's edge (a common system prompt, a session's own history) the count
is exact; inside a message (a trace's shared blocks) it is good to a piece, about 25 tokens.

Why each session keeps its own chain (`PrefixChain`, 8 bytes a piece): its own history was
all sent (or generated) by its earlier turns, so it never looks it up, and a turn costs work
in its new text only, not in its context length; its held prefix counts in the tokens the
server reported. The worker-wide `BlockRegistry` holds the keys for sharing between sessions.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnbench.tokenizer import GENERATION_OVERHEAD, MESSAGE_OVERHEAD, message_text

PIECE_CHARS = 128
"""Characters of message text a key stands for."""
HEADER_TOKENS = MESSAGE_OVERHEAD - 1
"""`<|im_start|>` and the role: a message's header, the same as a generation prompt's."""
END = "<|im_end|>\n"
_STARTS_KEPT = 256
"""First-message chains a registry keeps; beyond, it starts again (a workload with more
distinct system prompts than this gains nothing from keeping them)."""
KEY_BYTES = 64
"""What one key costs a registry: its int object and its share of a set's table."""


def header(role: str) -> str:
    """A message's template header: also the generation prompt when the role is the
    assistant's, so a prompt is a prefix of the history that follows its reply."""
    return f"<|im_start|>{role}\n"


GENERATION = header("assistant")


def _text_keys(parent: int, text: str, out: array[int]) -> int:
    """Append the keys of `text`'s pieces after `parent` to `out`; return the last key."""
    for start in range(0, len(text), PIECE_CHARS):
        parent = hash((parent, text[start : start + PIECE_CHARS]))
        out.append(parent)
    return parent


def _message_keys(parent: int, message: Mapping[str, Any], out: array[int]) -> tuple[int, int]:
    """Append a message's keys (header, text pieces, end); return (last key, text length)."""
    text = message_text(message)
    parent = hash((parent, header(str(message.get("role", "user")))))
    out.append(parent)
    parent = _text_keys(parent, text, out)
    parent = hash((parent, END))
    out.append(parent)
    return parent, len(text)


class BlockRegistry:
    """The keys earlier requests of this worker sent or generated, for sharing between
    sessions: two generations of sets, at most `capacity_mb` of them.

    Why generations and not an LRU: adding a request's keys is one C-level `set.update`; a
    key found in the old generation moves to the young one, and when the young one is full
    the old one is dropped, so what is still used survives (least recently used, roughly).
    """

    def __init__(self, block_size: int, capacity_mb: int) -> None:
        self.block_size = block_size
        self._half = max(1, capacity_mb * 1_000_000 // KEY_BYTES // 2)
        self._young: set[int] = set()
        self._old: set[int] = set()
        self.starts: dict[tuple[str, str], tuple[array[int], int]] = {}
        """The chains of first messages (system prompts) sessions begin with, by role and
        text, with the text's length: most sessions share one, and need not hash it again."""

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def extent(self, keys: Sequence[int], start: int) -> int:
        """The index of the first key of `keys`, from `start`, that is not held."""
        young, old = self._young, self._old
        for i in range(start, len(keys)):
            key = keys[i]
            if key in young:
                continue
            if key not in old:
                return i
            young.add(key)
        return max(start, len(keys))

    def add(self, *keys: Iterable[int]) -> None:
        """Hold keys (of one or more runs); the old generation goes when the young one is
        full."""
        self._young.update(*keys)
        if len(self._young) > self._half:
            self._old, self._young = self._young, set()


class PrefixChain:
    """One session's history as chained keys, with what of it is known held."""

    __slots__ = (
        "_fresh",
        "_new_lens",
        "_new_starts",
        "_sent",
        "block_size",
        "held",
        "held_tokens",
        "keys",
        "lens",
        "registered",
        "starts",
    )

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.keys: array[int] = array("q")
        """The history's keys, message after message."""
        self.starts: array[int] = array("l")
        """Index in `keys` of each history message's header."""
        self.lens: array[int] = array("l")
        """Characters of each history message's text."""
        self.held = 0
        """Keys of the history's start that this session's own requests sent or generated."""
        self.held_tokens = 0
        """The tokens of what they sent or generated (as the server's usage reported them)."""
        self.registered = 0
        """Keys of the history given to the registry."""
        self._fresh: array[int] = array("q")
        """The keys the prompt matched last adds after the history's (its new messages and
        the generation prompt)."""
        self._new_starts: list[int] = []
        self._new_lens: list[int] = []
        self._sent = False
        """The prompt matched last was computed and is not yet answered into the history."""

    def append(self, message: Mapping[str, Any]) -> None:
        """Append a message to the history."""
        self.starts.append(len(self.keys))
        _, n = _message_keys(self.keys[-1] if self.keys else 0, message, self.keys)
        self.lens.append(n)

    def begin(self, message: Mapping[str, Any], registry: BlockRegistry) -> None:
        """Start the history with its first message (a system prompt, the same for many
        sessions: its chain is hashed once per worker)."""
        key = (str(message.get("role", "user")), message_text(message))
        known = registry.starts.get(key)
        if known is None:
            self.append(message)
            if len(registry.starts) >= _STARTS_KEPT:
                registry.starts.clear()
            registry.starts[key] = (array("q", self.keys), self.lens[0])
            return
        keys, n = known
        self.keys = array("q", keys)
        self.starts, self.lens = array("l", [0]), array("l", [n])

    def match(self, new: Sequence[Mapping[str, Any]], registry: BlockRegistry) -> int:
        """A prompt of the history, `new` messages and the generation prompt is about to go
        out: return how many of its keys are held (its own are kept for `computed`)."""
        fresh: array[int] = array("q")
        parent = self.keys[-1] if self.keys else 0
        base = len(self.keys)
        self._new_starts, self._new_lens = [], []
        for message in new:
            self._new_starts.append(base + len(fresh))
            parent, n = _message_keys(parent, message, fresh)
            self._new_lens.append(n)
        fresh.append(hash((parent, GENERATION)))
        self._fresh = fresh
        self._sent = False
        matched = registry.extent(self.keys, self.held) if self.held < base else base
        if matched >= base:
            matched = base + registry.extent(fresh, 0)
        return matched

    def tokens_at(self, keys: int, sizes: Sequence[int]) -> float:
        """Tokens of the first `keys` keys of the prompt matched last; `sizes`: the tokens of
        its messages (the history's, then the new ones), in any one unit."""
        starts, lens = self.starts, self.lens
        n_hist = len(starts)
        base = len(self.keys)
        if keys >= base + len(self._fresh):
            return sum(sizes) + GENERATION_OVERHEAD
        if keys >= base + len(self._fresh) - 1:  # everything but the generation prompt
            return float(sum(sizes))
        if keys < base:
            j = bisect_right(starts, keys) - 1
            start, n = starts[j], lens[j]
        else:
            k = bisect_right(self._new_starts, keys) - 1
            j, start, n = n_hist + k, self._new_starts[k], self._new_lens[k]
        into = keys - start
        before = float(sum(sizes[:j]))
        if into == 0:
            return before
        pieces = min(into - 1, -(-n // PIECE_CHARS))
        share = min(1.0, pieces * PIECE_CHARS / n) if n else 1.0
        return before + HEADER_TOKENS + share * (sizes[j] - MESSAGE_OVERHEAD)

    def computed(self, registry: BlockRegistry, history_tokens: int) -> None:
        """The server computed the prompt last matched (its first token came): from now on
        its keys are held. `history_tokens`: the history's tokens, all in that prompt.

        Why at the first token and not at the send: a cache can reuse only what was computed;
        a request sent while another with the same prefix is still in prefill finds nothing.
        """
        registry.add(self.keys[self.registered :], self._fresh)
        self.registered = len(self.keys)
        self._sent = True
        if len(self.keys) > self.held:
            self.held, self.held_tokens = len(self.keys), max(self.held_tokens, history_tokens)

    def answered(
        self,
        new: Sequence[Mapping[str, Any]],
        reply: Mapping[str, Any],
        registry: BlockRegistry,
        held_tokens: int,
        generated: bool,
    ) -> None:
        """The prompt matched last was answered: its new messages and the reply join the
        history. `generated`: the reply is the server's own (not a recorded one), so the
        server holds its text after the prompt; `held_tokens`: the tokens of that prompt, and
        of the reply if generated."""
        fresh, sent = self._fresh, self._sent
        self._fresh, self._sent = array("q"), False
        keys = self.keys
        for start, n in zip(self._new_starts, self._new_lens, strict=True):
            self.starts.append(start)
            self.lens.append(n)
        keys.extend(fresh)  # the new messages and the generation prompt: the reply's header
        self.starts.append(len(keys) - 1)
        text = message_text(reply)
        self.lens.append(len(text))
        prompt = len(keys)
        parent = _text_keys(keys[-1], text, keys)
        keys.append(hash((parent, END)))
        if not sent:
            return
        self.registered = max(self.registered, prompt)
        held = len(keys) - 1 if generated else prompt  # a reply is held but for its end
        if held > self.held:
            self.held, self.held_tokens = held, held_tokens
        if generated and held > self.registered:
            registry.add(keys[self.registered : held])
            self.registered = held

    def restart(self, messages: Iterable[Mapping[str, Any]], kept: int, kept_tokens: int) -> None:
        """The history was cut: rebuild the chain from `messages`; its first `kept` messages
        (`kept_tokens` tokens) are the start of the old history (the system prompt), and stay
        held."""
        self.keys, self.starts, self.lens = array("q"), array("l"), array("l")
        held = 0
        for i, message in enumerate(messages):
            self.append(message)
            if i < kept:
                held = len(self.keys)
        if held < self.held:
            self.held, self.held_tokens = held, kept_tokens
        self.registered = min(self.registered, self.held)
        self._fresh, self._sent = array("q"), False
