"""The ideal cached prefix of each request: what an unbounded prefix cache would hold.

A request's ideal is the longest prefix of its prompt that earlier requests of the run sent,
or were answered with (vLLM, SGLang and llama.cpp keep the KV of generated tokens too), in
whole blocks of the server's block size, and never the prompt's last token (it is always
computed, to produce the first output token). The server's reported cached tokens are
measured against it.

Why chained keys, as the simulator's cache keeps its blocks: a piece of prompt is reusable
only when everything before it is identical, so each key hashes its parent's key with its own
content; matching walks the chain and stops at the first key nobody sent.

Why one key per whole message: it hashes the parent's key, the role and the text, and Python
keeps a string's hash in the string, so a message costs one small tuple hash whatever its
length, and most prompts share whole messages (a system prompt, a session's own history)
or nothing. Where a match stops inside a message (a trace's shared blocks, another session's
reply without its end marker), the text is compared in 128-character pieces (a piece weighs
its share of the message's tokens: good to about 25 tokens), and only there. For that each
registered message also leaves its header's key (`<|im_start|>role\\n`: two tokens) and its
first piece's key; a first piece's text is kept beside it, and only when two different texts
share a first piece are their pieces hashed and kept as keys (and every later text's with
that first piece). So the common case hashes no piece but the first.

Why each session keeps its own chain (`PrefixChain`, one key a message): its own history was
all sent (or generated) by its earlier turns, so it never looks it up, and a turn costs work
in its new messages only, not in its context length; its held prefix counts in the tokens the
server reported. The worker-wide `BlockRegistry` holds the keys for sharing between sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnbench.tokens.template import GENERATION_OVERHEAD, MESSAGE_OVERHEAD, message_text

PIECE_CHARS = 128
"""Characters of message text a piece key stands for, where a match stops inside a message."""
HEADER_TOKENS = MESSAGE_OVERHEAD - 1
"""`<|im_start|>` and the role: a message's header, the same as a generation prompt's."""
GENERATION_ROLE = "assistant"
"""The generation prompt that ends every request is the header of an assistant message: the
reply that follows it, so a prompt is a prefix of the history after its reply."""
KEY_BYTES = 64
"""What one key costs a registry: its int object and its share of a set's table."""
TEXT_BYTES = 120
"""What a kept first-piece text costs a registry beyond its characters: its str object and
its dict entry."""
_PIECES = ""
"""A first piece's kept text when two texts shared it: its texts are kept as piece keys."""
_NO_MATCH: tuple[list[tuple[int, str, str]], int, int, int, int, int] = ([], 0, 0, 0, 0, 0)


def _text(message: Mapping[str, Any]) -> str:
    """`message_text`, in fewer steps for the usual message: a string and no tool calls."""
    content = message.get("content")
    if type(content) is str and not message.get("tool_calls"):
        return content
    return message_text(message)


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
        "_half", "_old", "_old_texts", "_room", "_texts", "_young", "block_size", "swaps"
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
            self._old, self._young = young, set()
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


class PrefixChain:
    """One session's history as chained keys, one a message, with what of it is known held.

    Why the usual request's path is written out in `match`, `computed` and `answered`, with
    few helper calls and attributes: every request runs it, and most of its cost is the
    interpreter's per bytecode, not the hashing (bench/README.md).
    """

    __slots__ = (
        "_last", "_reply_swaps", "_sent", "_unkeyed", "held", "held_reply", "held_tokens",
        "msgs", "registry",
    )  # fmt: skip

    def __init__(self, registry: BlockRegistry, first: Mapping[str, Any] | None = None) -> None:
        """`registry`: the worker's, where this session's keys go and others' are found;
        `first`: the history's first message (a system prompt), if any."""
        self.registry = registry
        if first is None:
            self.msgs: list[tuple[int, str, str]] = []
            """The history: each message's key (chained from the one before), role and
            text."""
        else:
            role, text = first.get("role", "user"), first.get("content")
            if type(text) is not str or first.get("tool_calls"):
                text = message_text(first)
            self.msgs = [(hash((0, role, text)), role, text)]
        self.held = 0
        """History messages this session's own requests sent or generated (all of them
        given to the registry)."""
        self.held_reply = False
        """The message after them is a generated reply, held but for its end marker."""
        self.held_tokens = 0
        """The tokens of what they sent or generated (as the server's usage reported them)."""
        self._unkeyed = False
        """The last history message is a reply whose key is not hashed yet (it is 0): a
        session's last reply needs none."""
        self._last: tuple[list[tuple[int, str, str]], int, int, int, int, int] = _NO_MATCH
        """The prompt matched last: its new messages (as `msgs` holds them), its generation
        prompt's key, how many of its messages the registry held (so registered already), and
        the message its match stopped in with that message's header's and first piece's keys
        (0 where not hashed), so that `computed` need not hash them again."""
        self._sent = False
        """The prompt matched last was computed and is not yet answered into the history."""
        self._reply_swaps = -1
        """`registry.swaps` when the reply held but for its end marker (`held_reply`) left
        its header and first piece, if the generation had not changed since its prompt was
        computed; else -1. While it has not changed since either, those keys are in the
        young generation as they would be after adding them again, so `computed` need not."""

    def append(self, message: Mapping[str, Any]) -> None:
        """Append a message to the history."""
        msgs = self.msgs
        role, text = message.get("role", "user"), _text(message)
        msgs.append((hash((msgs[-1][0] if msgs else 0, role, text)), role, text))

    def match(
        self,
        messages: Sequence[Mapping[str, Any]],
        sizes: Sequence[int],
        size: int,
        new_sizes: Sequence[int],
    ) -> float | None:
        """A prompt of the history, new `messages` and the generation prompt is about to go
        out: the tokens of its longest held prefix when that passes what this session's own
        requests hold, else None. `sizes`, `new_sizes`: the tokens of the history's messages
        and of the new ones, in any one unit; `size`: the sum of `sizes`."""
        msgs = self.msgs
        n = len(msgs)
        if self._unkeyed:  # the reply answered last: its key, now that a request follows it
            _, reply_role, reply_text = msgs[-1]
            parent = msgs[-2][0] if n > 1 else 0
            msgs[-1] = (hash((parent, reply_role, reply_text)), reply_role, reply_text)
            self._unkeyed = False
        base = parent = msgs[-1][0] if n else 0
        new = []
        for message in messages:
            role, text = message.get("role", "user"), message.get("content")
            if type(text) is not str or message.get("tool_calls"):
                text = message_text(message)
            parent = hash((parent, role, text))
            new.append((parent, role, text))
        generation = hash((parent, GENERATION_ROLE))
        self._sent = False
        registry = self.registry
        young, old = registry._young, registry._old
        i = held = self.held
        # the history past what this session holds, then the new messages: another's?
        # (`registry.holds`, written out: a key of the old generation moves to the young)
        while i < n:
            key = msgs[i][0]
            if key not in young:
                if key not in old:
                    break
                young.add(key)
            i += 1
        else:
            for key, _, _ in new:
                if key not in young:
                    if key not in old:
                        break
                    young.add(key)
                i += 1
            else:
                self._last = (new, generation, i, 0, 0, 0)
                if generation in young or registry.holds(generation):
                    return size + sum(new_sizes) + GENERATION_OVERHEAD
                return float(size + sum(new_sizes))
        if i == held and self.held_reply:  # its reply's end: nobody else holds more
            self._last = (new, generation, i, 0, 0, 0)
            return None
        # the match stops in message i: its header, then its text's pieces as far as they go
        if i < n:
            _, role, text = msgs[i]
            before: float = sum(sizes[:i])
            tokens = sizes[i]
            head = hash((msgs[i - 1][0] if i else 0, role))
        else:
            _, role, text = new[i - n]
            before = size + sum(new_sizes[: i - n]) if i > n else size
            tokens = new_sizes[i - n]
            head = hash((new[i - n - 1][0] if i > n else base, role))
        if head not in young:
            if head not in old:
                self._last = (new, generation, i, i, head, 0)
                return None if i == held else before
            young.add(head)
        if not text:
            self._last = (new, generation, i, i, head, 0)
            return before + HEADER_TOKENS
        first = hash((head, text[:PIECE_CHARS]))
        self._last = (new, generation, i, i, head, first)
        if first not in young:
            if first not in old:
                return before + HEADER_TOKENS
            young.add(first)
        chars = len(text)
        if chars <= PIECE_CHARS:
            return before + HEADER_TOKENS + tokens - MESSAGE_OVERHEAD  # all but its end
        share = min(1.0, registry.pieces(first, text) * PIECE_CHARS / chars)
        return before + HEADER_TOKENS + share * (tokens - MESSAGE_OVERHEAD)

    def computed(self, history_tokens: int) -> None:
        """The server computed the prompt last matched (its first token came): from now on
        its keys are held. `history_tokens`: the history's tokens, all in that prompt.

        Each of its messages the registry did not hold leaves its key, its header's, and its
        first piece's (a long text's with the text), for a later match that stops inside it.

        Why at the first token and not at the send: a cache can reuse only what was computed;
        a request sent while another with the same prefix is still in prefill finds nothing.
        """
        msgs, registry = self.msgs, self.registry
        new, generation, start, at, head, first = self._last
        n = len(msgs)
        held = self.held
        if start < held:
            start = held
        keys = [generation]
        long_first, long_text = 0, ""
        reply = held if self.held_reply and self._reply_swaps == registry.swaps else -1
        if start < n:  # history nobody registered: a reply, a cut history
            todo = msgs[start:] + new
            parent = msgs[start - 1][0] if start else 0
        elif start == n:  # the usual: the new messages, all of them
            todo = new
            parent = msgs[-1][0] if n else 0
        else:
            todo = new[start - n :]
            parent = new[start - n - 1][0]
        for key, role, text in todo:
            if start == reply:  # its header and first piece held as `answered` left them
                keys.append(key)
                parent = key
                start += 1
                continue
            if start == at and head:  # the message the match stopped in: hashed already
                h, f = head, first
            else:
                h, f = hash((parent, role)), 0
            keys.append(key)
            keys.append(h)
            if len(text) > PIECE_CHARS:
                if long_text:  # (a request of more than one long message: all but the last)
                    registry.keep(long_first, long_text)
                long_first, long_text = f or hash((h, text[:PIECE_CHARS])), text
            elif text:
                keys.append(f or hash((h, text)))
            parent = key
            start += 1
        registry.add(keys, long_first, long_text)
        self._reply_swaps = registry.swaps
        self._sent = True
        if n > held or self.held_reply:
            self.held, self.held_reply = n, False
            if history_tokens > self.held_tokens:
                self.held_tokens = history_tokens

    def answered(
        self,
        reply: Mapping[str, Any],
        held_tokens: int,
        generated: bool,
    ) -> None:
        """The prompt matched last was answered: its new messages and the reply join the
        history. `generated`: the reply is the server's own (not a recorded one), so the
        server holds its text after the prompt; `held_tokens`: the tokens of that prompt, and
        of the reply if generated."""
        msgs = self.msgs
        last = self._last
        msgs += last[0]
        role, text = reply.get("role", GENERATION_ROLE), reply.get("content")
        if type(text) is not str or reply.get("tool_calls"):
            text = message_text(reply)
        msgs.append((0, role, text))
        self._unkeyed = True
        if not self._sent:
            return
        self._sent = False
        prompt = len(msgs) - 1
        if prompt > self.held or (generated and not self.held_reply):
            self.held, self.held_reply, self.held_tokens = prompt, generated, held_tokens
        if generated and text:  # held but for its end marker: its header and first piece
            if role == GENERATION_ROLE:  # its header is the generation prompt: registered
                head = last[1]
                keys: tuple[int, ...] = ()
            else:
                head = hash((msgs[-2][0], role))
                keys = (head,)
            registry = self.registry
            if len(text) > PIECE_CHARS:
                registry.add(keys, hash((head, text[:PIECE_CHARS])), text)
            else:
                registry.add((*keys, hash((head, text))))
            if registry.swaps == self._reply_swaps:
                return
        self._reply_swaps = -1

    def restart(self, messages: Iterable[Mapping[str, Any]], kept: int, kept_tokens: int) -> None:
        """The history was cut: rebuild the chain from `messages`; its first `kept` messages
        (`kept_tokens` tokens) are the start of the old history (the system prompt), and stay
        held."""
        self.msgs, self._unkeyed = [], False
        for message in messages:
            self.append(message)
        if kept < self.held or (kept == self.held and self.held_reply):
            self.held, self.held_reply, self.held_tokens = kept, False, kept_tokens
        self._last, self._sent, self._reply_swaps = _NO_MATCH, False, -1
