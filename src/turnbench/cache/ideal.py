"""The ideal cached prefix of each request: what an unbounded prefix cache would hold.

A request's ideal is the longest prefix of its prompt that earlier requests of the run sent,
or were answered with (vLLM, SGLang and llama.cpp keep the KV of generated tokens too), in
whole blocks of the server's block size, and never the prompt's last token (it is always
computed, to produce the first output token). The server's reported cached tokens are
measured against it.

Why chained block keys, as the simulator's cache keeps them: a block is reusable only when
everything before it is identical, so each block's key hashes its parent's key with its own
units; matching walks the chain and stops at the first block nobody sent.

Why units and not the server's tokens: the client has no tokenizer on the hot path. A unit
is a template marker, a role, or a white-space separated word of a message's text, which is
exactly a token of the simulator's tokenizer for the texts turnbench writes (vocabulary words,
salts, trace block ids); for other texts and servers, units become tokens at the session's
ratio of estimated prompt tokens to units.

Why each session keeps its own chain (`PrefixChain`, 8 bytes a block): its own history was
all sent (or generated) by its earlier turns, so it never looks it up, and a turn costs work
in its new units only, not in its context length. The worker-wide `BlockRegistry` holds the
blocks for sharing between sessions (a common system prompt, a trace's shared blocks), up to a
bounded number, least recently used dropped first.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnbench.tokenizer import message_text

START = "<|im_start|>"
END = "<|im_end|>"
_STARTS_KEPT = 256
"""First-message chains a registry keeps; beyond, it starts again (a workload with more
distinct system prompts than this gains nothing from keeping them)."""
GENERATION_UNITS = (START, "assistant")
"""The units of the generation prompt that ends every request; a reply message starts with
the same two, so a prompt is a prefix of the history that follows its reply."""


def message_units(message: Mapping[str, Any]) -> list[str]:
    """The units of one rendered message: start marker, role, the words of its text, end."""
    return [START, str(message.get("role", "user")), *message_text(message).split(), END]


def reply_units(message: Mapping[str, Any]) -> list[str]:
    """The units a server generated for a reply: the words of its text (its start marker and
    role were the prompt's generation prompt; its end marker it never saw in context)."""
    return message_text(message).split()


class BlockRegistry:
    """The blocks earlier requests of this worker sent or generated, for sharing between
    sessions: an LRU set of chained block keys, at most `capacity_tokens` worth."""

    def __init__(self, block_size: int, capacity_tokens: int) -> None:
        self.block_size = block_size
        self.capacity = max(1, capacity_tokens // block_size)
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.starts: dict[tuple[str, str], tuple[array[int], list[str]]] = {}
        """The chains of first messages (system prompts) sessions begin with, by role and
        text: most sessions share one, and need not hash it again."""

    def __len__(self) -> int:
        return len(self._blocks)

    def extent(self, keys: Sequence[int], start: int) -> int:
        """The index of the first block of `keys`, from `start`, that is not held (hits are
        touched, most recently used)."""
        blocks = self._blocks
        i = start
        for i in range(start, len(keys)):
            if keys[i] not in blocks:
                return i
            blocks.move_to_end(keys[i])
        return max(start, len(keys))

    def add(self, keys: Iterable[int]) -> None:
        """Hold blocks (touching those already held), dropping the least recently used."""
        blocks = self._blocks
        for key in keys:
            if key in blocks:
                blocks.move_to_end(key)
            else:
                blocks[key] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)


def _chain(parent: int, units: Sequence[str], block_size: int, out: array[int]) -> int:
    """Append the keys of the full blocks of `units` after `parent` to `out`; the last key."""
    for start in range(0, len(units) - block_size + 1, block_size):
        parent = hash((parent, *units[start : start + block_size]))
        out.append(parent)
    return parent


class PrefixChain:
    """One session's history as chained block keys, with what of it is known held."""

    __slots__ = (
        "_fresh",
        "_prompt_units",
        "_sent",
        "block_size",
        "held",
        "held_tokens",
        "keys",
        "registered",
        "tail",
        "units",
    )

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.keys: array[int] = array("q")
        """Keys of the history's full blocks."""
        self.tail: list[str] = []
        """Units after the last full block."""
        self.units = 0
        """Units of the history."""
        self.held = 0
        """Units of the history's start that this session's own requests sent or generated."""
        self.held_tokens = 0
        """The same prefix in the server's tokens (as its usage reported them, if it did)."""
        self.registered = 0
        """Blocks of `keys` given to the registry."""
        self._fresh: array[int] = array("q")
        """Keys of the blocks the prompt matched last adds after the history's."""
        self._prompt_units = 0
        """Units of the prompt matched last."""
        self._sent: tuple[int, int] | None = None
        """(blocks, units) of the prompt computed last and not yet answered into the
        history."""

    def extend(self, units: Sequence[str]) -> None:
        """Append units to the history."""
        bs = self.block_size
        tail = self.tail
        tail.extend(units)
        self.units += len(units)
        if len(tail) >= bs:
            full = len(tail) // bs * bs
            _chain(self.keys[-1] if self.keys else 0, tail[:full], bs, self.keys)
            del tail[:full]

    def begin(self, message: Mapping[str, Any], registry: BlockRegistry) -> None:
        """Start the history with its first message (a system prompt, the same for many
        sessions: its chain is hashed once per worker)."""
        key = (str(message.get("role", "user")), message_text(message))
        known = registry.starts.get(key)
        if known is None:
            self.extend(message_units(message))
            if len(registry.starts) >= _STARTS_KEPT:
                registry.starts.clear()
            registry.starts[key] = (array("q", self.keys), list(self.tail))
            return
        keys, tail = known
        self.keys = array("q", keys)
        self.tail = list(tail)
        self.units = len(keys) * self.block_size + len(tail)

    def match(self, new_units: Sequence[str], registry: BlockRegistry) -> int:
        """A prompt of the history, `new_units` and the generation prompt is about to go
        out: its ideal cached units (its blocks are kept for `computed`)."""
        bs = self.block_size
        pending = [*self.tail, *new_units, *GENERATION_UNITS]
        fresh: array[int] = array("q")
        _chain(self.keys[-1] if self.keys else 0, pending, bs, fresh)
        own = self.held // bs
        n_hist = len(self.keys)
        matched = registry.extent(self.keys, own) if own < n_hist else own
        if matched >= n_hist:
            matched = n_hist + registry.extent(fresh, 0)
        self._fresh = fresh
        self._sent = None
        self._prompt_units = self.units + len(new_units) + len(GENERATION_UNITS)
        return max(self.held, matched * bs)

    def computed(self, registry: BlockRegistry, history_tokens: int) -> None:
        """The server computed the prompt last matched (its first token came): from now on
        its blocks are held. `history_tokens`: the history's tokens, all in that prompt.

        Why at the first token and not at the send: a cache can reuse only what was computed;
        a request sent while another with the same prefix is still in prefill finds nothing.
        """
        fresh = self._fresh
        n_hist = len(self.keys)
        registry.add(self.keys[self.registered :])
        registry.add(fresh)
        self.registered = n_hist
        self._sent = (n_hist + len(fresh), self._prompt_units)
        if self.units > self.held:
            self.held, self.held_tokens = self.units, max(self.held_tokens, history_tokens)

    def answered(
        self,
        new_units: Sequence[str],
        reply: Sequence[str],
        registry: BlockRegistry,
        held_tokens: int,
        generated: bool,
    ) -> None:
        """The prompt sent last was answered: its new units and the reply message join the
        history. `generated`: the reply is the server's own (not a recorded one), so the
        server holds its text after the prompt; `held_tokens`: the tokens of that prompt,
        and of the reply if generated."""
        sent, fresh = self._sent, self._fresh
        self._sent, self._fresh = None, array("q")
        bs = self.block_size
        tail = [*self.tail, *new_units, *GENERATION_UNITS, *reply, END]
        self.units += len(tail) - len(self.tail)
        self.keys.extend(fresh)  # the prompt's blocks, hashed when it was matched
        done = len(fresh) * bs
        full = (len(tail) - done) // bs * bs
        _chain(self.keys[-1] if self.keys else 0, tail[done : done + full], bs, self.keys)
        self.tail = tail[done + full :]
        if sent is None:
            return
        blocks, prompt_units = sent
        self.registered = max(self.registered, min(blocks, len(self.keys)))
        held = prompt_units + (len(reply) if generated else 0)
        if held > self.held:
            self.held, self.held_tokens = held, held_tokens
        end = min(self.held // self.block_size, len(self.keys))
        if end > self.registered:
            registry.add(self.keys[self.registered : end])
            self.registered = end

    def restart(self, messages: Iterable[Mapping[str, Any]], kept: int, kept_tokens: int) -> None:
        """The history was cut: rebuild the chain from `messages`; its first `kept` messages
        (`kept_tokens` tokens) are the start of the old history (the system prompt), and stay
        held."""
        bs = self.block_size
        self.keys = array("q")
        self.tail = []
        self.units = 0
        held = 0
        for i, message in enumerate(messages):
            self.extend(message_units(message))
            if i < kept:
                held = self.units
        if held < self.held:
            self.held, self.held_tokens = held, kept_tokens
        self.registered = min(self.registered, self.held // bs, len(self.keys))
        self._sent = None
