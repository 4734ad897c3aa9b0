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
server reported. The worker-wide `BlockRegistry` (`turnbench.cache.registry`) holds the keys
for sharing between sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnbench.cache.registry import KEY_BYTES, PIECE_CHARS, TEXT_BYTES, BlockRegistry
from turnbench.tokens.template import GENERATION_OVERHEAD, MESSAGE_OVERHEAD, message_text

HEADER_TOKENS = MESSAGE_OVERHEAD - 1
"""`<|im_start|>` and the role: a message's header, the same as a generation prompt's."""
GENERATION_ROLE = "assistant"
"""The generation prompt that ends every request is the header of an assistant message: the
reply that follows it, so a prompt is a prefix of the history after its reply."""
Entry = tuple[int, str, str]
"""A history message as the chain holds it: its key (chained from the one before), role, text."""
_GENERAL = -2
"""`_last`'s swaps of a prompt that `computed` registers the general way, from `_where`."""


class PrefixChain:
    """One session's history as chained keys, one a message, with what of it is known held.

    Why `match` prepares what `computed` adds (`_last`): on a request of one new message it
    hashes that message's key, header and first piece anyway, so `computed` is one
    `set.update` of a tuple and a text kept. Most requests add one message (a one-turn
    conversation's after a shared system prompt, an agent's next tool result), and most of
    their cost is the interpreter's per bytecode, not the hashing (bench/README.md); any
    other request takes the general path (`_match`, `_stop`, `_register`), same figure.

    Why what a request made held (`held`, `held_reply`, `held_tokens`) is settled only at the
    next match (or a cut): only a match reads it, so a one-turn conversation never pays for
    it, and a turn settles its prompt and its reply in one step. Why the reply answered last
    joins `msgs` only then (`_reply`): its key hashes its whole text, which only a next
    request needs. The registry's keys, by contrast, go in at once (`computed`, `answered`):
    other sessions may look them up before this one's next match. Why the server's own reply
    (`answered`) and any other (`answered_unheld`) come in apart: the session knows which,
    and the first is an assistant message of a string, whose role and text need no reading.

    Why no `__init__` (`new_chain` makes one): called from C, in an interpreter loop of its
    own, it took ~400 of the ~2,800 instructions of making a chain (bench/README.md). `_last`,
    `_tokens`, `_where` are set before they are read (a `computed` or an answer follows a match).
    """

    __slots__ = (
        "_last", "_reply", "_sent", "_tokens", "_where", "held", "held_reply", "held_tokens",
        "msgs", "registry",
    )  # fmt: skip
    registry: BlockRegistry
    msgs: list[Entry]
    held: int
    """History messages this session's own requests sent or generated (all of them given to
    the registry), as of the last match, like `held_reply` and `held_tokens`."""
    held_reply: int | None
    """None, or the message after them is a generated reply, held but for its end marker,
    and this is the `registry.swaps` when the prompt before it was computed (-1: its header
    and first piece not registered, or no longer counted on): while that stands, they are in
    the young generation as adding them again would leave them, so `computed` need not."""
    held_tokens: int
    """The tokens they sent or generated (as the server's usage reported them)."""
    _sent: int
    """`registry.swaps` when the prompt matched last was computed (-1: not, or settled), and
    `_tokens` its history's tokens."""
    _tokens: float
    _reply: tuple[Sequence[Entry], str, str, int | None, int] | None
    """That prompt's new messages and its answer (role, text, the `held_reply` it makes, the
    tokens it made held), not yet in `msgs`."""
    _last: tuple[Sequence[Entry], tuple[int, ...], str, int]
    """The prompt matched last: its new messages (as entries), the keys `computed` adds (the
    generation prompt's first), a text to keep with the last if long, and the `registry.swaps`
    that needs (-1: none; `_GENERAL`, or the generation turned since: `computed` takes the
    general path, from `held` if that swaps was 0 or more, else from `_where`)."""
    _where: tuple[int, int, int, int]
    """How many of the prompt's messages the registry held, the message its match stopped
    in, and that message's header's and first piece's keys (0 where not hashed)."""

    def append(self, message: Mapping[str, Any]) -> None:
        """Append a message to the history."""
        msgs = self.msgs
        role, text = message.get("role", "user"), message.get("content")
        if text.__class__ is not str or "tool_calls" in message:  # (else it is the content)
            text = message_text(message)
        msgs.append((hash((msgs[-1][0] if msgs else 0, role, text)), role, text))

    def _settle(self) -> None:
        """What the requests since the last match made this session hold, now that it
        matters (a match, a cut): the prompt, computed (`_sent`, `_tokens`), and its answer
        (`_reply`: held but for its end marker if the server's own)."""
        n = len(self.msgs)
        if n > self.held or self.held_reply is not None:
            self.held, self.held_reply = n, None
            if (tokens := round(self._tokens)) > self.held_tokens:
                self.held_tokens = tokens
        reply = self._reply
        if reply is not None:
            new, _, _, held_reply, held_tokens = reply
            if new or held_reply is not None:
                self.held += len(new)
                self.held_reply, self.held_tokens = held_reply, held_tokens
        self._sent = -1

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
        reply = self._reply
        if reply is not None:  # answered: `_answered_again`, written out
            folded, reply_role, reply_text, held_reply, held_tokens = reply
            settle = self._sent >= 0
            if settle and not folded and held_reply is None:  # (no more held)
                self._settle()
                settle = False
            msgs += folded
            base = hash((msgs[-1][0] if msgs else 0, reply_role, reply_text))
            msgs.append((base, reply_role, reply_text))
            self._reply = None
            n = len(msgs)
            if settle:  # the prompt and the reply (`held` was at most the prompt's history)
                self.held, self.held_reply, self.held_tokens = n - 1, held_reply, held_tokens
                self._sent = -1
        else:
            if self._sent >= 0:  # computed, not answered (a retry)
                self._settle()
            n = len(msgs)
            base = msgs[-1][0] if n else 0
        if len(messages) != 1:
            return self._match(messages, sizes, size, new_sizes)
        # one new message: the general path written out (a lookup moves a key of the old
        # generation to the young, as `registry.holds` does); `base`: the history's last key
        message = messages[0]
        role, text = message.get("role", "user"), message.get("content")
        if text.__class__ is not str or "tool_calls" in message:
            text = message_text(message)
        key = hash((base, role, text))
        new = ((key, role, text),)
        generation = hash((key, GENERATION_ROLE))
        registry = self.registry
        young = registry._young
        held = self.held
        if held == n - 1:  # one message past what it holds (a system prompt, its reply): another's?
            if base not in young:
                if base not in registry._old:
                    held_reply = self.held_reply
                    if held_reply is None:
                        return self._stop(new, generation, held, base, sizes, size, new_sizes)
                    # its reply's end: nobody holds more. The reply's header and first piece
                    # are held as `answered` left them while no generation turned (if one
                    # turns before `computed`, that takes the general path from `held`)
                    if held_reply != registry.swaps:
                        self._last = (new, (generation,), "", _GENERAL)
                        self._where = (held, 0, 0, 0)
                        return None
                    head = hash((base, role))
                    if not text:
                        self._last = (new, (generation, base, key, head), "", held_reply)
                        return None
                    keys = (generation, base, key, head, hash((head, text[:PIECE_CHARS])))
                    self._last = (new, keys, text, held_reply)
                    return None
                young.add(base)
        elif held < n:  # more of the history past what it holds (a cut history): another's?
            i = held
            while i < n:
                k = msgs[i][0]
                if k not in young:
                    if k not in registry._old:
                        if i == held and self.held_reply is not None:
                            self._last = (new, (generation,), "", _GENERAL)
                            self._where = (i, 0, 0, 0)
                            return None
                        return self._stop(new, generation, i, base, sizes, size, new_sizes)
                    young.add(k)
                i += 1
        old = registry._old
        if key in young or key in old:  # all of it
            young.add(key)
            self._last = (new, (generation,), "", -1)
            if generation in young or registry.holds(generation):
                return size + new_sizes[0] + GENERATION_OVERHEAD
            return float(size + new_sizes[0])
        # the match stops in the new message: its header, then its first piece
        # (`held_reply` means the reply is message `held`, so here `held` < n)
        head = hash((base, role))
        if not text:
            self._last = (new, (generation, key, head), "", -1)
            if head not in young:
                if head not in old:
                    return None if n == held else size
                young.add(head)
            return size + HEADER_TOKENS
        first = hash((head, text[:PIECE_CHARS]))
        self._last = (new, (generation, key, head, first), text, -1)
        if head not in young:
            if head not in old:
                return None if n == held else size
            young.add(head)
        if first not in young:
            if first not in old:
                return size + HEADER_TOKENS
            young.add(first)
        chars = len(text)
        if chars <= PIECE_CHARS:
            return size + HEADER_TOKENS + new_sizes[0] - MESSAGE_OVERHEAD  # all but its end
        share = min(1.0, registry.pieces(first, text) * PIECE_CHARS / chars)
        return size + HEADER_TOKENS + share * (new_sizes[0] - MESSAGE_OVERHEAD)

    def _match(
        self,
        messages: Sequence[Mapping[str, Any]],
        sizes: Sequence[int],
        size: int,
        new_sizes: Sequence[int],
    ) -> float | None:
        """`match` of any number of new messages."""
        msgs = self.msgs
        n = len(msgs)
        base = parent = msgs[-1][0] if n else 0
        new = []
        for message in messages:
            role, text = message.get("role", "user"), message.get("content")
            if type(text) is not str or "tool_calls" in message:
                text = message_text(message)
            parent = hash((parent, role, text))
            new.append((parent, role, text))
        generation = hash((parent, GENERATION_ROLE))
        registry = self.registry
        young, old = registry._young, registry._old
        i = self.held
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
                self._last = (new, (generation,), "", _GENERAL)
                self._where = (i, 0, 0, 0)
                if generation in young or registry.holds(generation):
                    return size + sum(new_sizes) + GENERATION_OVERHEAD
                return float(size + sum(new_sizes))
        if i == self.held and self.held_reply is not None:  # its reply's end: nobody holds more
            self._last = (new, (generation,), "", _GENERAL)
            self._where = (i, 0, 0, 0)
            return None
        return self._stop(new, generation, i, base, sizes, size, new_sizes)

    def _stop(
        self,
        new: Sequence[Entry],
        generation: int,
        i: int,
        base: int,
        sizes: Sequence[int],
        size: int,
        new_sizes: Sequence[int],
    ) -> float | None:
        """`match` where it stops in message `i` of the history and `new` (`base`: the key
        of the history's last message): its header, then its text's pieces as far as they
        go."""
        msgs, registry = self.msgs, self.registry
        young, old = registry._young, registry._old
        n = len(msgs)
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
        self._last = (new, (generation,), "", _GENERAL)
        if head not in young:
            if head not in old:
                self._where = (i, i, head, 0)
                return None if i == self.held else before
            young.add(head)
        if not text:
            self._where = (i, i, head, 0)
            return before + HEADER_TOKENS
        first = hash((head, text[:PIECE_CHARS]))
        self._where = (i, i, head, first)
        if first not in young:
            if first not in old:
                return before + HEADER_TOKENS
            young.add(first)
        chars = len(text)
        if chars <= PIECE_CHARS:
            return before + HEADER_TOKENS + tokens - MESSAGE_OVERHEAD  # all but its end
        share = min(1.0, registry.pieces(first, text) * PIECE_CHARS / chars)
        return before + HEADER_TOKENS + share * (tokens - MESSAGE_OVERHEAD)

    def computed(self, history_tokens: float) -> None:
        """The server computed the prompt last matched (its first token came): from now on
        its keys are held. `history_tokens`: the history's tokens, all in that prompt (rounded
        only if the prompt is not answered, when they count).

        Each of its messages the registry did not hold leaves its key, its header's, and its
        first piece's (a long text's with the text), for a later match that stops inside it.

        Why at the first token and not at the send: a cache can reuse only what was computed;
        a request sent while another with the same prefix is still in prefill finds nothing.
        """
        new, keys, text, swaps = self._last
        registry = self.registry
        if swaps != -1 and swaps != registry.swaps:  # the general way (or the reply's keys went)
            if swaps >= 0:  # prepared after the session's own reply: its match passed `held`
                self._register(new, keys[0], self.held, 0, 0, 0)
            else:
                self._register(new, keys[0], *self._where)
        else:  # `registry.add`, written out
            young = registry._young
            young.update(keys)
            if (chars := len(text)) > PIECE_CHARS:
                first = keys[-1]
                texts = registry._texts
                if first not in texts and first not in registry._old_texts:  # `keep`'s usual
                    texts[first] = text
                    registry._room -= chars + TEXT_BYTES
                else:
                    registry.keep(first, text)
            if len(young) * KEY_BYTES > registry._room:
                registry.turn()
        self._sent = registry.swaps
        self._tokens = history_tokens

    def _register(
        self, new: Sequence[Entry], generation: int, start: int, at: int, head: int, first: int
    ) -> None:
        """`computed`'s registry work for any prompt (`_where`'s fields)."""
        msgs, registry = self.msgs, self.registry
        n = len(msgs)
        held = self.held
        if start < held:
            start = held
        keys = [generation]
        long_first, long_text = 0, ""
        reply = held if self.held_reply == registry.swaps else -1
        if start < n:  # history nobody registered: a reply, a cut history
            todo: Sequence[Entry] = [*msgs[start:], *new]
            parent = msgs[start - 1][0] if start else 0
        elif start == n:  # the new messages, all of them
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

    def _answered_again(self) -> None:
        """An answer came with no match since the last one: that one settles (if computed),
        and its prompt and reply join `msgs` (as a match folds them)."""
        if self._sent >= 0:
            self._settle()
        reply = self._reply
        assert reply is not None
        new, role, text, _, _ = reply
        msgs = self.msgs
        msgs += new
        msgs.append((hash((msgs[-1][0] if msgs else 0, role, text)), role, text))
        self._reply = None

    def answered(self, text: str, held_tokens: int) -> None:
        """The prompt matched last was answered by the server's own reply, an assistant message
        of `text`, which it holds after the prompt: the prompt's new messages and the reply
        join the history. `held_tokens`: the tokens of that prompt and of the reply."""
        if self._reply is not None:
            self._answered_again()
        last = self._last
        sent = self._sent
        if sent < 0 or not text:
            self._reply = (last[0], GENERATION_ROLE, text, -1, held_tokens)
            return
        # held but for its end marker: its header (the generation prompt, registered) and
        # first piece; `registry.add`, written out
        registry = self.registry
        young = registry._young
        first = hash((last[1][0], text[:PIECE_CHARS]))
        young.add(first)
        if (chars := len(text)) > PIECE_CHARS:
            texts = registry._texts
            if first not in texts and first not in registry._old_texts:  # `keep`'s usual
                texts[first] = text
                registry._room -= chars + TEXT_BYTES
            else:
                registry.keep(first, text)
        if len(young) * KEY_BYTES > registry._room:
            registry.turn()  # (then `sent` is no longer `registry.swaps`)
        self._reply = (last[0], GENERATION_ROLE, text, sent, held_tokens)

    def answered_unheld(self, reply: Mapping[str, Any], held_tokens: int) -> None:
        """The prompt matched last was answered by a reply the server does not hold after
        it (a recorded one, or one that calls tools): the prompt's new messages and the reply
        join the history. `held_tokens`: the tokens of that prompt."""
        if self._reply is not None:
            self._answered_again()
        role, text = reply.get("role", GENERATION_ROLE), reply.get("content")
        if text.__class__ is not str or "tool_calls" in reply:
            text = message_text(reply)
        self._reply = (self._last[0], role, text, None, held_tokens)

    def restart(self, messages: Iterable[Mapping[str, Any]], kept: int, kept_tokens: int) -> None:
        """The history was cut: rebuild the chain from `messages`; its first `kept` messages
        (`kept_tokens` tokens) are the start of the old history (the system prompt), and stay
        held."""
        if self._sent >= 0:
            self._settle()
        self.msgs, self._reply = [], None
        for message in messages:
            self.append(message)
        if kept < self.held or (kept == self.held and self.held_reply is not None):
            self.held, self.held_reply, self.held_tokens = kept, None, kept_tokens
        elif self.held_reply is not None:  # (its header and first piece no longer counted on)
            self.held_reply = -1
        self._sent = -1


def new_chain(registry: BlockRegistry, system: str | None = None) -> PrefixChain:
    """A session's chain, its history empty or `system`, the text of a system prompt, alone:
    the worker's `registry`, where its keys go and others' are found."""
    chain = PrefixChain()
    chain.registry = registry
    if not system:
        chain.msgs = []
    else:
        top = registry._system
        if top[2] != system:
            top = registry._system = (hash((0, "system", system)), "system", system)
        chain.msgs = [top]
    chain.held = chain.held_tokens = 0
    chain.held_reply = chain._reply = None
    chain._sent = -1
    return chain
