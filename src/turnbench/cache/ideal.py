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
_NO_MATCH: tuple[list[tuple[int, str, str]], int, int, int, int, int] = ([], 0, 0, 0, 0, 0)


def _text(message: Mapping[str, Any]) -> str:
    """`message_text`, in fewer steps for the usual message: a string and no tool calls."""
    content = message.get("content")
    if type(content) is str and not message.get("tool_calls"):
        return content
    return message_text(message)


class PrefixChain:
    """One session's history as chained keys, one a message, with what of it is known held.

    Why `match`, `computed` and `answered` open with a path for one new message written out
    (few calls, attributes and tuples): every request runs them, most requests add one
    message (a one-turn conversation's after a shared system prompt, an agent's next tool
    result), and most of their cost is the interpreter's per bytecode, not the hashing
    (bench/README.md). Any other request takes the general path, which gives the same figure.

    Why the reply answered last joins `msgs` only when the next request is matched (`_reply`):
    its key hashes its whole text, which only a next request needs, and a one-turn
    conversation has none.
    """

    __slots__ = (
        "_last", "_reply", "_reply_swaps", "_sent", "held", "held_reply", "held_tokens", "msgs",
        "registry",
    )  # fmt: skip

    def __init__(self, registry: BlockRegistry, system: str | None = None) -> None:
        """`registry`: the worker's, where this session's keys go and others' are found;
        `system`: the text of the history's first message, a system prompt, if any.

        The attributes: `msgs`, the history: each message's key (chained from the one
        before), role and text. `held`: history messages this session's own requests sent or
        generated (all of them given to the registry); `held_reply`: the message after them
        is a generated reply, held but for its end marker; `held_tokens`: the tokens of what
        they sent or generated (as the server's usage reported them). `_reply`: the new
        messages of the prompt answered last and its reply (role, text), not yet in `msgs`.
        `_last`: the prompt matched last: its new messages (as `msgs` holds them), its
        generation prompt's key, how many of its messages the registry held (so registered
        already), and the message its match stopped in with that message's header's and
        first piece's keys (0 where not hashed), so that `computed` need not hash them again.
        `_sent`: that prompt was computed and is not yet answered. `_reply_swaps`:
        `registry.swaps` when the reply held but for its end marker (`held_reply`) left its
        header and first piece, if the generation had not changed since its prompt was
        computed; else -1. While it has not changed since either, those keys are in the young
        generation as they would be after adding them again, so `computed` need not.
        """
        self.registry = registry
        if system is None:
            self.msgs: list[tuple[int, str, str]] = []
        else:
            top = registry._system
            if top[2] != system:
                top = registry._system = (hash((0, "system", system)), "system", system)
            self.msgs = [top]
        self.held = 0
        self.held_reply = False
        self.held_tokens = 0
        self._reply: tuple[list[tuple[int, str, str]], str, str] | None = None
        self._last: tuple[list[tuple[int, str, str]], int, int, int, int, int] = _NO_MATCH
        self._sent = False
        self._reply_swaps = -1

    def append(self, message: Mapping[str, Any]) -> None:
        """Append a message to the history."""
        msgs = self.msgs
        role, text = message.get("role", "user"), _text(message)
        msgs.append((hash((msgs[-1][0] if msgs else 0, role, text)), role, text))

    def _fold(self) -> None:
        """The prompt answered last and its reply join `msgs`: the reply's key, now that a
        request follows it."""
        reply = self._reply
        assert reply is not None
        new, role, text = reply
        msgs = self.msgs
        msgs += new
        msgs.append((hash((msgs[-1][0] if msgs else 0, role, text)), role, text))
        self._reply = None

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
        if reply is not None:  # `_fold`, written out
            folded, reply_role, reply_text = reply
            msgs += folded
            key = hash((msgs[-1][0] if msgs else 0, reply_role, reply_text))
            msgs.append((key, reply_role, reply_text))
            self._reply = None
        self._sent = False
        n = len(msgs)
        if len(messages) != 1:
            return self._match(messages, sizes, size, new_sizes)
        # one new message: the general path written out (a lookup moves a key of the old
        # generation to the young, as `registry.holds` does)
        message = messages[0]
        role, text = message.get("role", "user"), message.get("content")
        if type(text) is not str or "tool_calls" in message:
            text = message_text(message)
        base = msgs[-1][0] if n else 0
        key = hash((base, role, text))
        new = [(key, role, text)]
        generation = hash((key, GENERATION_ROLE))
        registry = self.registry
        young = registry._young
        held = self.held
        if held == n - 1:  # one message past what it holds (a system prompt, its reply): another's?
            if base not in young:
                if base not in registry._old:
                    if self.held_reply:  # its reply's end: nobody holds more
                        self._last = (new, generation, held, 0, 0, 0)
                        return None
                    return self._stop(new, generation, held, base, sizes, size, new_sizes)
                young.add(base)
        elif held < n:  # more of the history past what it holds (a cut history): another's?
            i = held
            while i < n:
                k = msgs[i][0]
                if k not in young:
                    if k not in registry._old:
                        if i == held and self.held_reply:
                            self._last = (new, generation, i, 0, 0, 0)
                            return None
                        return self._stop(new, generation, i, base, sizes, size, new_sizes)
                    young.add(k)
                i += 1
        old = registry._old
        if key in young or key in old:  # all of it
            young.add(key)
            self._last = (new, generation, n + 1, 0, 0, 0)
            if generation in young or registry.holds(generation):
                return size + new_sizes[0] + GENERATION_OVERHEAD
            return float(size + new_sizes[0])
        # (`held_reply` means the reply is message `held`, so here `held` < n)
        head = hash((base, role))  # the match stops in the new message: its header, its text
        if head not in young:
            if head not in old:
                self._last = (new, generation, n, n, head, 0)
                return None if n == held else size
            young.add(head)
        if not text:
            self._last = (new, generation, n, n, head, 0)
            return size + HEADER_TOKENS
        first = hash((head, text[:PIECE_CHARS]))
        self._last = (new, generation, n, n, head, first)
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
                self._last = (new, generation, i, 0, 0, 0)
                if generation in young or registry.holds(generation):
                    return size + sum(new_sizes) + GENERATION_OVERHEAD
                return float(size + sum(new_sizes))
        if i == self.held and self.held_reply:  # its reply's end: nobody else holds more
            self._last = (new, generation, i, 0, 0, 0)
            return None
        return self._stop(new, generation, i, base, sizes, size, new_sizes)

    def _stop(
        self,
        new: list[tuple[int, str, str]],
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
        if head not in young:
            if head not in old:
                self._last = (new, generation, i, i, head, 0)
                return None if i == self.held else before
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
        new, generation, start, at, head, first = self._last
        msgs, registry = self.msgs, self.registry
        n = len(msgs)
        held = self.held
        if len(new) == 1 and (
            (at == n and head)  # (`at` is `start` where `head` is hashed)
            or (start == held == n - 1 and self.held_reply and self._reply_swaps == registry.swaps)
        ):
            # the usual, written out: the one new message (the match stopped in it, or in the
            # reply before it, whose header and first piece `answered` left held)
            key, role, text = new[0]
            if at == n:
                keys: tuple[int, ...] = (generation, key, head)
            else:
                reply = msgs[-1][0]
                head, first = hash((reply, role)), 0
                keys = (generation, reply, key, head)
            young = registry._young
            young.update(keys)
            if (chars := len(text)) > PIECE_CHARS:
                first = first or hash((head, text[:PIECE_CHARS]))
                texts = registry._texts
                if first not in texts and first not in registry._old_texts:  # `keep`'s usual
                    young.add(first)
                    texts[first] = text
                    registry._room -= chars + TEXT_BYTES
                else:
                    registry.keep(first, text)
            elif text:
                young.add(first or hash((head, text)))
            if len(young) * KEY_BYTES > registry._room:
                registry.turn()
        else:
            self._register(new, generation, start, at, head, first)
        self._reply_swaps = registry.swaps
        self._sent = True
        if n > held or self.held_reply:
            self.held, self.held_reply = n, False
            if history_tokens > self.held_tokens:
                self.held_tokens = history_tokens

    def _register(
        self, new: list[tuple[int, str, str]], generation: int, start: int, at: int, head: int,
        first: int,
    ) -> None:  # fmt: skip
        """`computed`'s registry work for any prompt (`_last`'s fields)."""
        msgs, registry = self.msgs, self.registry
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
        if self._reply is not None:  # (two answers with no match between)
            self._fold()
        last = self._last
        new = last[0]
        role, text = reply.get("role", GENERATION_ROLE), reply.get("content")
        if type(text) is not str or "tool_calls" in reply:
            text = message_text(reply)
        self._reply = (new, role, text)
        if not self._sent:
            return
        self._sent = False
        # (`computed` ran last: `held` is the history's length and `held_reply` False)
        if new or generated:
            self.held += len(new)
            self.held_reply, self.held_tokens = generated, held_tokens
        if generated and text:  # held but for its end marker: its header and first piece
            registry = self.registry
            young = registry._young
            if role == GENERATION_ROLE:  # its header is the generation prompt: registered
                head = last[1]
            else:
                head = hash(((new or self.msgs)[-1][0], role))
                young.add(head)
            if (chars := len(text)) > PIECE_CHARS:  # `registry.add`, written out
                first = hash((head, text[:PIECE_CHARS]))
                texts = registry._texts
                if first not in texts and first not in registry._old_texts:  # `keep`'s usual
                    young.add(first)
                    texts[first] = text
                    registry._room -= chars + TEXT_BYTES
                else:
                    registry.keep(first, text)
            else:
                young.add(hash((head, text)))
            if len(young) * KEY_BYTES > registry._room:
                registry.turn()
            if registry.swaps == self._reply_swaps:
                return
        self._reply_swaps = -1

    def restart(self, messages: Iterable[Mapping[str, Any]], kept: int, kept_tokens: int) -> None:
        """The history was cut: rebuild the chain from `messages`; its first `kept` messages
        (`kept_tokens` tokens) are the start of the old history (the system prompt), and stay
        held."""
        self.msgs, self._reply = [], None
        for message in messages:
            self.append(message)
        if kept < self.held or (kept == self.held and self.held_reply):
            self.held, self.held_reply, self.held_tokens = kept, False, kept_tokens
        self._last, self._sent, self._reply_swaps = _NO_MATCH, False, -1
